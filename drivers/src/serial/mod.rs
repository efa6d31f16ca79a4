//! Serial line protocols: NMEA 0183 from GPS and timing receivers (more to come here: the
//! configurable ASCII line parser and raw capture, and the serial-line driver that runs
//! them over a port).

pub mod nmea;
