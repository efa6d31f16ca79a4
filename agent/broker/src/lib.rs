//! The embedded MQTT broker for the instrument LAN, consumed in-process.
//!
//! Instruments publish to the gateway itself, so no site broker is needed. The protocol
//! (MQTT 3.1.1: CONNECT, keep-alive, QoS 0/1/2 flows, packet size limits) is ntex-mqtt's;
//! this module decides what a PUBLISH means. The server runs on its own thread with its
//! own (ntex) runtime: an accept thread and one worker. It listens on `listen` (plain)
//! and/or `tls_listen`; TLS is terminated by the agent (rustls, handshakes in their own
//! tasks under a timeout, at most `max_connections`) and relayed byte for byte to an
//! internal loopback listener of the MQTT server. Clients authenticate with a user name
//! and password checked in constant time against the password files named in the config
//! (read once at start, kept in a redacting [`Secret`]).
//!
//! Invariants:
//! - **A PUBACK means committed.** A QoS 1 PUBLISH (PUBREC for QoS 2) is answered only
//!   after every MQTT driver it was delivered to has answered [`Committed`] for it, i.e.
//!   after the buffer committed its readings (fsynced in `power` mode), or decided they
//!   are routed nowhere. ntex-mqtt sends the PUBACK when the publish service's future
//!   completes, in the order the PUBLISHes came.
//! - **Backpressure, not loss.** Nothing between the socket and the buffer evicts or
//!   overflows: each connection has at most [`MAX_INFLIGHT`] publishes (and
//!   [`MAX_INFLIGHT_BYTES`]) being handled; past that ntex stops reading its socket and
//!   TCP slows the publisher. A delivery waits for room in a driver's queue
//!   ([`SUBSCRIBER_QUEUE`]); a driver waits for room in ingest's.
//! - **Refused visibly.** A publish whose commit is not confirmed (the buffer failed or
//!   the agent is stopping) is not acknowledged: the connection is closed, so the client
//!   sends it again on its next connection; counted in `refused`, logged. A publish that
//!   arrives after a client's disconnect was seen is still stored (QoS 0 and 1).
//! - **Claimed topics wait for their driver.** The pipeline tells the broker which
//!   drivers use it and their filters ([`EmbeddedBroker::expect`], at start and at each
//!   reload). A message whose topic one of them claims waits, unacknowledged, while that
//!   driver is not subscribed (starting, restarting after a reload); it is never dropped
//!   for that. A message that no expected driver claims is acknowledged and dropped:
//!   counted in `unclaimed`, the first [`UNCLAIMED_LOGGED`] such topics logged, so a
//!   mistyped filter is visible.
//! - The broker lives as long as the agent: a change to `[broker]` needs a restart (a
//!   reload says so); drivers that use it come and go with reloads.
//! - Start-up binds every listener itself (errors are start errors naming the address),
//!   loads the certificate and key, reads every password file.
//! - Behind the TLS front, the server sees every TLS client as coming from 127.0.0.1;
//!   logins are still per user.
//! - Not built for 32-bit ARM (armv7): ntex-net 4.0 depends there on a syscall crate that
//!   no longer compiles; `start` says so, and armv7 gateways use an external broker.

#![forbid(unsafe_code)]

mod settings;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::Listener;
#[cfg(not(target_arch = "arm"))]
use ntex_mqtt::v3;
#[cfg(not(target_arch = "arm"))]
use ntex_mqtt::{MqttServiceConfig, QoS};
#[cfg(not(target_arch = "arm"))]
use ntex_service::cfg::SharedCfg;
#[cfg(not(target_arch = "arm"))]
use ntex_util::time::Seconds;
use skygate_drivers::mqtt::{Delivery, LocalBroker, Message, TopicFilter};
use skygate_drivers::{BoxFuture, Committed};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use settings::BrokerSettings;
use skygate_security::TlsListener;
use skygate_security::secret::{Secret, SecretError};

/// Messages queued for one subscribing driver before a delivery waits for it.
pub const SUBSCRIBER_QUEUE: usize = 1024;
/// Publishes of one connection being handled (delivered, waiting for their commit) at
/// most; past it the connection is not read until one completes.
pub const MAX_INFLIGHT: u16 = 256;
/// Payload bytes of one connection's publishes in flight, at most.
pub const MAX_INFLIGHT_BYTES: usize = 16 << 20;
/// Distinct unclaimed topics logged, at most.
pub const UNCLAIMED_LOGGED: usize = 32;
/// A delivery waiting this long for an expected driver is logged (once per message).
const WAIT_LOGGED: Duration = Duration::from_secs(5);
/// Time a client has to send its CONNECT.
#[cfg(not(target_arch = "arm"))]
const CONNECT_TIMEOUT: Seconds = Seconds(10);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker: cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("broker: TLS: {0}")]
    Tls(#[from] skygate_drivers::tls::TlsError),
    #[error("broker: user {user}: {source}")]
    Password { user: String, source: SecretError },
    #[error("broker: cannot start: {0}")]
    Start(String),
}

/// What the broker counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    /// Connections that completed CONNECT.
    pub connections: AtomicU64,
    /// CONNECTs refused for a wrong user name or password.
    pub logins_refused: AtomicU64,
    /// Publishes handled to the end (acknowledged, for QoS 1 and 2).
    pub published: AtomicU64,
    /// Publishes not acknowledged because their commit was not confirmed.
    pub refused: AtomicU64,
    /// Publishes acknowledged and dropped: no driver claims their topic.
    pub unclaimed: AtomicU64,
}

/// A subscriber as the broker routes to it.
#[derive(Debug, Clone)]
struct Route {
    name: Arc<str>,
    filters: Vec<TopicFilter>,
    /// Named by the pipeline as a driver of this broker: its messages wait for it.
    expected: bool,
    /// `None` while the driver is not subscribed.
    tx: Option<mpsc::Sender<Delivery>>,
}

impl Route {
    fn claims(&self, topic: &str) -> bool {
        self.filters.iter().any(|f| f.matches(topic))
    }
}

/// What every connection's publish service shares.
#[derive(Debug)]
struct Shared {
    routes: watch::Sender<Arc<Vec<Route>>>,
    metrics: Arc<BrokerMetrics>,
    unclaimed_seen: Mutex<HashSet<String>>,
}

/// A running embedded broker, as drivers subscribe to it.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    shared: Arc<Shared>,
}

/// Why a publish was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("its commit was not confirmed")]
    NotCommitted,
    #[error("the payload could not be read")]
    Payload,
    #[error("the broker is stopping")]
    Stopping,
}

impl From<()> for Refused {
    fn from(_: ()) -> Self {
        Refused::Stopping
    }
}

impl EmbeddedBroker {
    /// The drivers of this broker and their filters, as the config names them: messages
    /// they claim wait for them; any other registration without a live subscriber goes.
    pub fn expect(&self, drivers: Vec<(String, Vec<TopicFilter>)>) {
        self.shared.routes.send_modify(|routes| {
            let routes = Arc::make_mut(routes);
            for r in routes.iter_mut() {
                r.expected = false;
            }
            for (name, filters) in drivers {
                match routes.iter_mut().find(|r| *r.name == *name) {
                    Some(r) => {
                        r.expected = true;
                        r.filters = filters;
                    }
                    None => routes.push(Route {
                        name: Arc::from(name),
                        filters,
                        expected: true,
                        tx: None,
                    }),
                }
            }
            routes.retain(|r| r.expected || r.tx.as_ref().is_some_and(|tx| !tx.is_closed()));
        });
    }

    pub fn metrics(&self) -> Arc<BrokerMetrics> {
        self.shared.metrics.clone()
    }
}

impl Shared {
    fn subscribe(&self, name: String, filters: Vec<TopicFilter>) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        self.routes.send_modify(|routes| {
            let routes = Arc::make_mut(routes);
            match routes.iter_mut().find(|r| *r.name == *name) {
                Some(r) => {
                    r.filters = filters;
                    r.tx = Some(tx);
                }
                None => routes.push(Route {
                    name: Arc::from(name),
                    filters,
                    expected: false,
                    tx: Some(tx),
                }),
            }
        });
        rx
    }

    /// A subscriber's queue closed: an expected one is waited for, any other forgotten.
    fn gone(&self, name: &str) {
        self.routes.send_if_modified(|routes| {
            let Some(i) = routes.iter().position(|r| {
                *r.name == *name && r.tx.as_ref().is_some_and(mpsc::Sender::is_closed)
            }) else {
                return false;
            };
            let routes = Arc::make_mut(routes);
            if routes[i].expected {
                routes[i].tx = None;
            } else {
                routes.remove(i);
            }
            true
        });
    }

    /// Hands `msg` to every subscriber that claims it, waiting for room in their queues
    /// and for expected subscribers that are away; returns the commit answers to wait
    /// for (none without `ack`, or when nobody claims the topic).
    async fn deliver(
        &self,
        msg: Message,
        ack: bool,
    ) -> Result<Vec<oneshot::Receiver<Committed>>, Refused> {
        let mut changes = self.routes.subscribe();
        let mut delivered: Vec<Arc<str>> = Vec::new();
        let mut answers = Vec::new();
        let started = tokio::time::Instant::now();
        let mut logged = false;
        loop {
            let routes = changes.borrow_and_update().clone();
            let mut claimed = false;
            let mut away = None;
            for r in routes.iter().filter(|r| r.claims(&msg.topic)) {
                claimed = true;
                if delivered.contains(&r.name) {
                    continue;
                }
                let Some(tx) = &r.tx else {
                    away = Some(r.name.clone());
                    continue;
                };
                let (answer, rx) = if ack {
                    let (tx, rx) = oneshot::channel();
                    (Some(tx), Some(rx))
                } else {
                    (None, None)
                };
                let d = Delivery {
                    msg: msg.clone(),
                    ack: answer,
                };
                if tx.send(d).await.is_ok() {
                    delivered.push(r.name.clone());
                    answers.extend(rx);
                } else {
                    self.gone(&r.name);
                    if r.expected {
                        away = Some(r.name.clone());
                    }
                }
            }
            if !claimed {
                self.unclaimed(&msg.topic);
                return Ok(answers);
            }
            let Some(driver) = away else {
                return Ok(answers);
            };
            // An expected driver is not subscribed (yet): wait for the table to change.
            let wait = WAIT_LOGGED.saturating_sub(started.elapsed());
            tokio::select! {
                changed = changes.changed() => changed.map_err(|_| Refused::Stopping)?,
                _ = tokio::time::sleep(wait), if !logged => {
                    logged = true;
                    tracing::warn!(topic = %msg.topic, %driver, "embedded broker: a message waits for its driver to subscribe; its publisher is held back");
                }
            }
        }
    }

    fn unclaimed(&self, topic: &str) {
        self.metrics.unclaimed.fetch_add(1, Ordering::Relaxed);
        let mut seen = self
            .unclaimed_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.len() < UNCLAIMED_LOGGED && seen.insert(topic.to_string()) {
            tracing::info!(%topic, "embedded broker: no mqtt driver claims this topic; its messages are acknowledged and dropped");
        }
    }

    #[cfg_attr(target_arch = "arm", allow(dead_code))]
    /// One PUBLISH, from delivery to the answer its PUBACK waits for (`ack`: QoS 1/2).
    async fn publish(&self, msg: Message, ack: bool) -> Result<(), Refused> {
        let answers = self.deliver(msg, ack).await?;
        for a in answers {
            if a.await.is_err() {
                self.metrics.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "embedded broker: a publish was not committed; not acknowledged, closing its connection so the client sends it again"
                );
                return Err(Refused::NotCommitted);
            }
        }
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl LocalBroker for EmbeddedBroker {
    fn subscribe(
        &self,
        subscriber: &str,
        filters: Vec<TopicFilter>,
    ) -> BoxFuture<Result<mpsc::Receiver<Delivery>, String>> {
        let rx = self.shared.subscribe(subscriber.to_string(), filters);
        tracing::debug!(driver = %subscriber, "subscribed to the embedded broker");
        Box::pin(async move { Ok(rx) })
    }

    fn publish(&self, msg: Message) -> BoxFuture<Result<(), String>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared
                .deliver(msg, false)
                .await
                .map(drop)
                .map_err(|e| format!("the embedded broker: {e}"))
        })
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, BrokerError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| BrokerError::Bind { addr, source })
}

/// Starts the broker's server thread and its TLS front (on the current runtime), with
/// `drivers` as the first [`EmbeddedBroker::expect`]. `stop` closes the TLS front.
pub fn start(
    s: &BrokerSettings,
    drivers: Vec<(String, Vec<TopicFilter>)>,
    stop: CancellationToken,
) -> Result<EmbeddedBroker, BrokerError> {
    let mut users = BTreeMap::new();
    for (user, file) in &s.users {
        let secret = Secret::from_password_file(file).map_err(|source| BrokerError::Password {
            user: user.clone(),
            source,
        })?;
        users.insert(user.clone(), secret);
    }
    let tls = match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => Some(skygate_drivers::tls::server_config(cert, key)?),
        _ => None,
    };
    let mut listeners = Vec::new();
    if let Some(addr) = s.listen {
        listeners.push(("mqtt", bind(addr)?));
    }
    // The TLS front binds the public address; the server gets a loopback port behind it.
    let mut front = None;
    if let (Some(addr), Some(tls)) = (s.tls_listen, tls) {
        let public = bind(addr)?;
        let internal = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let internal_addr = internal
            .local_addr()
            .map_err(|source| BrokerError::Bind { addr, source })?;
        listeners.push(("mqtts", internal));
        front = Some((public, tls, internal_addr));
    }

    let shared = Arc::new(Shared {
        routes: watch::Sender::new(Arc::new(Vec::new())),
        metrics: Arc::default(),
        unclaimed_seen: Mutex::default(),
    });
    let broker = EmbeddedBroker {
        shared: shared.clone(),
    };
    broker.expect(drivers);
    let auth = Arc::new(Auth {
        users: (!s.allow_anonymous).then_some(users),
        metrics: shared.metrics.clone(),
    });
    let max_connections = s.max_connections;
    // Topic and header on top of the largest payload allowed.
    let max_frame = u32::try_from(s.max_payload + 64 * 1024).unwrap_or(u32::MAX);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let spec = ServerSpec {
        listeners,
        shared,
        auth,
        max_connections,
        max_frame,
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = serve(spec, started_tx) {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(format!("thread: {e}")))?;
    // Milliseconds: until the server thread has registered its listeners.
    skygate_util::blocking_here(|| started_rx.recv())
        .map_err(|_| BrokerError::Start("the server thread ended at start".into()))?
        .map_err(|e| BrokerError::Start(e.to_string()))?;

    if let Some((public, tls, internal)) = front {
        let listener =
            tokio::net::TcpListener::from_std(public).map_err(|source| BrokerError::Bind {
                addr: internal,
                source,
            })?;
        let tls = TlsListener::spawn(
            listener,
            tokio_rustls::TlsAcceptor::from(tls),
            stop,
            "embedded broker",
            s.max_connections,
        );
        tokio::spawn(relay(tls, internal));
    }
    tracing::info!(
        listen = ?s.listen,
        tls_listen = ?s.tls_listen,
        users = s.users.len(),
        anonymous = s.allow_anonymous,
        "embedded MQTT broker started"
    );
    Ok(broker)
}

/// Who may connect.
#[derive(Debug)]
#[cfg_attr(target_arch = "arm", allow(dead_code))]
struct Auth {
    /// `None`: anonymous clients are allowed.
    users: Option<BTreeMap<String, Secret>>,
    metrics: Arc<BrokerMetrics>,
}

impl Auth {
    #[cfg_attr(target_arch = "arm", allow(dead_code))]
    fn allows(&self, user: Option<&str>, password: Option<&[u8]>) -> bool {
        let Some(users) = &self.users else {
            return true;
        };
        let (Some(user), Some(password)) = (user, password) else {
            return false;
        };
        users.get(user).is_some_and(|s| s.matches(password))
    }
}

/// What the MQTT server thread serves, and with which limits.
#[derive(Debug)]
#[cfg_attr(target_arch = "arm", allow(dead_code))]
struct ServerSpec {
    listeners: Vec<(&'static str, std::net::TcpListener)>,
    shared: Arc<Shared>,
    auth: Arc<Auth>,
    max_connections: usize,
    /// Largest MQTT packet accepted, header included.
    max_frame: u32,
}

/// See the module doc: no MQTT server on 32-bit ARM.
#[cfg(target_arch = "arm")]
fn serve(
    _spec: ServerSpec,
    started: std::sync::mpsc::Sender<std::io::Result<()>>,
) -> std::io::Result<()> {
    let _ = started.send(Err(std::io::Error::other(
        "the embedded broker is not built for 32-bit ARM; use an external broker (mqtt driver with url)",
    )));
    Ok(())
}

/// The MQTT server on this thread's own runtime, until it stops. Reports on `started`
/// once its listeners are registered.
#[cfg(not(target_arch = "arm"))]
fn serve(
    spec: ServerSpec,
    started: std::sync::mpsc::Sender<std::io::Result<()>>,
) -> std::io::Result<()> {
    let ServerSpec {
        listeners,
        shared,
        auth,
        max_connections,
        max_frame,
    } = spec;
    ntex_rt::System::new("mqtt-broker", ntex_net::DefaultRuntime).block_on(async move {
        let cfg: SharedCfg = SharedCfg::new("skygate-broker")
            .add(
                MqttServiceConfig::new()
                    .set_max_qos(QoS::ExactlyOnce)
                    .set_max_size(max_frame)
                    .set_max_receive(MAX_INFLIGHT)
                    .set_max_receive_size(MAX_INFLIGHT_BYTES)
                    .set_connect_timeout(CONNECT_TIMEOUT)
                    // What arrived before a disconnect was seen is stored, not dropped.
                    .set_handle_qos_after_disconnect(Some(QoS::AtLeastOnce)),
            )
            .into();
        let mut builder = ntex_server::net::ServerBuilder::default()
            .workers(1)
            .maxconn(max_connections.max(1))
            .disable_signals();
        for (name, listener) in listeners {
            let shared = shared.clone();
            let auth = auth.clone();
            let built = builder.listen(name, listener, cfg.clone(), async move |_| {
                let shared = shared.clone();
                let auth = auth.clone();
                v3::MqttServer::new(ntex_service::fn_service(move |p: v3::Publish| {
                    let shared = shared.clone();
                    async move {
                        let payload = p.read_all().await.map_err(|_| Refused::Payload)?;
                        let msg = Message {
                            topic: p.publish_topic().to_string(),
                            payload: bytes::Bytes::copy_from_slice(&payload),
                        };
                        shared.publish(msg, p.qos() != QoS::AtMostOnce).await
                    }
                }))
                .build(ntex_service::fn_service(move |c: v3::Connect| {
                    let auth = auth.clone();
                    async move { Ok::<_, Refused>(connect(&auth, c)) }
                }))
            });
            builder = match built {
                Ok(b) => b,
                Err(e) => {
                    let _ = started.send(Err(e));
                    return Ok(());
                }
            };
        }
        let _ = started.send(Ok(()));
        builder.run().await
    })
}

#[cfg(not(target_arch = "arm"))]
fn connect(auth: &Auth, c: v3::Connect) -> v3::ConnectAck<()> {
    let pkt = c.packet();
    let user = pkt.username.as_ref().map(|u| u.to_string());
    if !auth.allows(user.as_deref(), pkt.password.as_deref()) {
        auth.metrics.logins_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            user = user.as_deref().unwrap_or(""),
            "embedded broker: login refused"
        );
        return c.bad_username_or_pwd();
    }
    auth.metrics.connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(client = %pkt.client_id, "embedded broker: client connected");
    c.ack((), false)
}

/// Relays each TLS connection to the server's internal listener, byte for byte.
async fn relay(mut tls: TlsListener, internal: SocketAddr) {
    loop {
        let (mut conn, remote) = tls.accept().await;
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(internal).await {
                Ok(mut up) => {
                    let _ = up.set_nodelay(true);
                    // Ends when either side closes; errors are the client going away.
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                }
                Err(e) => {
                    tracing::error!(%remote, error = %e, "embedded broker: internal listener unreachable")
                }
            }
        });
    }
}
