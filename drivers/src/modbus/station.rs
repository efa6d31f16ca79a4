//! A simulated Modbus weather station, served over real Modbus TCP on loopback, so the
//! embedded default (and a demo) exercises the whole driver: connection, request
//! planning, decoding, scaling.
//!
//! Register map (any unit id answers; other addresses get exception 2):
//!
//! | table | address | type | meaning |
//! |---|---|---|---|
//! | input | 0 | i16, x0.1 | air temperature, degC (daily-ish sine around 8) |
//! | input | 1 | u16, x0.1 | relative humidity, % |
//! | input | 2 | u16, x0.01 | wind speed, m/s |
//! | input | 3 | u16 | wind direction, degrees |
//! | input | 4-5 | f32 | pressure, hPa |
//! | holding | 0-3 | string (8 chars) | model, `SKYWX-1` |
//! | holding | 4-5 | u32 | serial number |
//! | discrete | 0 | bool | rain detected |

use std::f64::consts::TAU;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

/// The station's state: values are functions of the time since start.
#[derive(Debug)]
pub struct Station {
    started: Instant,
}

const MODEL: &[u8; 8] = b"SKYWX-1\0";
const SERIAL: u32 = 20_261_122;

impl Station {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    /// Input registers 0..6 now.
    pub fn inputs(&self) -> [u16; 6] {
        let t = self.started.elapsed().as_secs_f64();
        let temp = 8.0 + 4.0 * (TAU * t / 600.0).sin();
        let humidity = 60.0 - 15.0 * (TAU * t / 600.0).sin();
        let wind = 5.0 + 3.0 * (TAU * t / 47.0).sin() + 1.5 * (TAU * t / 13.0).sin();
        let direction = (270.0 + 40.0 * (TAU * t / 300.0).sin()).rem_euclid(360.0);
        let pressure = 1013.25 + 2.0 * (TAU * t / 3600.0).sin();
        let p = (pressure as f32).to_bits();
        [
            ((temp * 10.0).round() as i16) as u16,
            (humidity * 10.0).round() as u16,
            (wind.max(0.0) * 100.0).round() as u16,
            direction.round() as u16,
            (p >> 16) as u16,
            p as u16,
        ]
    }

    pub fn holding(&self) -> [u16; 6] {
        let m = |i: usize| u16::from_be_bytes([MODEL[i], MODEL[i + 1]]);
        [m(0), m(2), m(4), m(6), (SERIAL >> 16) as u16, SERIAL as u16]
    }

    /// Rain for one minute in every ten.
    pub fn raining(&self) -> bool {
        (self.started.elapsed().as_secs() / 60) % 10 == 9
    }

    fn answer(&self, req: &Request<'_>) -> Result<Response, ExceptionCode> {
        fn span<T: Copy>(all: &[T], addr: u16, cnt: u16) -> Result<Vec<T>, ExceptionCode> {
            let (a, c) = (usize::from(addr), usize::from(cnt));
            all.get(a..a + c)
                .map(<[T]>::to_vec)
                .ok_or(ExceptionCode::IllegalDataAddress)
        }
        match *req {
            Request::ReadInputRegisters(a, c) => {
                span(&self.inputs(), a, c).map(Response::ReadInputRegisters)
            }
            Request::ReadHoldingRegisters(a, c) => {
                span(&self.holding(), a, c).map(Response::ReadHoldingRegisters)
            }
            Request::ReadDiscreteInputs(a, c) => {
                span(&[self.raining()], a, c).map(Response::ReadDiscreteInputs)
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

impl Default for Station {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone)]
struct Service(Arc<Station>);

impl tokio_modbus::server::Service for Service {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        ready(self.0.answer(&req.request))
    }
}

/// Binds `127.0.0.1:0` and serves the station until `stop`; returns the address.
pub async fn spawn(stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let station = Arc::new(Station::new());
    tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = |stream, peer| {
            let station = station.clone();
            async move { accept_tcp_connection(stream, peer, |_| Ok(Some(Service(station.clone())))) }
        };
        let on_error =
            |e: std::io::Error| tracing::debug!(error = %e, "simulated station: connection ended");
        if let Err(e) = server
            .serve_until(&on_connected, on_error, stop.cancelled_owned())
            .await
        {
            tracing::warn!(error = %e, "simulated station stopped");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_answers_what_its_table_says_and_refuses_the_rest() {
        let s = Station::new();
        let inputs = s.inputs();
        let temp = f64::from(inputs[0] as i16) / 10.0;
        assert!((4.0..=12.0).contains(&temp), "{temp}");
        let p = f32::from_bits((u32::from(inputs[4]) << 16) | u32::from(inputs[5]));
        assert!((1000.0..1030.0).contains(&p), "{p}");
        assert_eq!(
            s.answer(&Request::ReadHoldingRegisters(4, 2)),
            Ok(Response::ReadHoldingRegisters(vec![
                (SERIAL >> 16) as u16,
                SERIAL as u16
            ]))
        );
        assert_eq!(
            s.answer(&Request::ReadInputRegisters(5, 2)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            s.answer(&Request::WriteSingleRegister(0, 1)),
            Err(ExceptionCode::IllegalFunction)
        );
    }
}
