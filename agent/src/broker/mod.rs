//! The embedded MQTT broker for the instrument LAN (rumqttd), consumed in-process.
//!
//! Instruments publish to the gateway itself, so no site broker is needed. The broker
//! listens on `listen` (plain) and/or `tls_listen`. TLS is terminated by the agent (rustls
//! 0.23, handshakes in their own tasks under a timeout, at most `max_connections`) and
//! relayed to an internal loopback listener of rumqttd: rumqttd's own TLS (rustls 0.22)
//! refuses clients that send an IP address as SNI, which libmosquitto does when an
//! instrument is configured with the gateway's IP, and handshakes on its accept loop;
//! clients authenticate with a user name and password checked in constant time against
//! the password files named in the config (read once at start, kept in a redacting
//! [`Secret`]). One in-process link subscribes to everything; the hub task fans each
//! message out to the MQTT drivers whose filters match ([`LocalBroker`]).
//!
//! Invariants and limits:
//! - The broker lives as long as the agent: rumqttd cannot stop its listeners, so a
//!   change to `[broker]` needs a restart (a reload says so); drivers that use it come
//!   and go with reloads.
//! - Start-up checks what rumqttd would only log later: each address can be bound, the
//!   certificate and key load, every password file reads. Any failure is a start error.
//! - Backpressure, not loss: the hub waits for a slow driver's queue
//!   ([`SUBSCRIBER_QUEUE`] messages), so the broker's own bounded queues fill and
//!   publishers are slowed by TCP. A message no driver subscribes to is dropped; the
//!   first few such topics are logged so a mistyped filter is visible.
//! - rumqttd acknowledges a QoS 1 publish once its router has it, before the agent
//!   commits it: a power cut in that window loses it (the external-broker path
//!   acknowledges after commit instead).
//! - Behind the TLS front, rumqttd sees every TLS client as coming from 127.0.0.1; logins
//!   are still per user.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::Listener;

use rumqttd::{Broker, Config, ConnectionSettings, Notification, RouterConfig, ServerSettings};
use skygate_drivers::BoxFuture;
use skygate_drivers::mqtt::{LocalBroker, Message, TopicFilter};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::BrokerSettings;
use crate::control::tcp::TlsListener;
use crate::util::secret::{Secret, SecretError};

/// Messages queued for one subscribing driver before the hub waits for it.
pub const SUBSCRIBER_QUEUE: usize = 1024;
/// Distinct unclaimed topics logged, at most.
const UNCLAIMED_LOGGED: usize = 32;

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

/// A running embedded broker, as drivers subscribe to it.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    hub: mpsc::Sender<HubCmd>,
}

#[derive(Debug)]
enum HubCmd {
    Subscribe {
        name: String,
        filters: Vec<TopicFilter>,
        reply: oneshot::Sender<mpsc::Receiver<Message>>,
    },
    /// From a simulated instrument: into the broker like any client's publish.
    Publish(Message),
}

impl LocalBroker for EmbeddedBroker {
    fn subscribe(
        &self,
        subscriber: &str,
        filters: Vec<TopicFilter>,
    ) -> BoxFuture<Result<mpsc::Receiver<Message>, String>> {
        let hub = self.hub.clone();
        let name = subscriber.to_string();
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            hub.send(HubCmd::Subscribe {
                name,
                filters,
                reply,
            })
            .await
            .map_err(|_| "the embedded broker has stopped".to_string())?;
            rx.await
                .map_err(|_| "the embedded broker has stopped".to_string())
        })
    }

    fn publish(&self, msg: Message) -> BoxFuture<Result<(), String>> {
        let hub = self.hub.clone();
        Box::pin(async move {
            hub.send(HubCmd::Publish(msg))
                .await
                .map_err(|_| "the embedded broker has stopped".to_string())
        })
    }
}

/// Starts the broker's threads, its TLS front and the hub task (on the current runtime).
/// `stop` closes the TLS front.
pub fn start(s: &BrokerSettings, stop: CancellationToken) -> Result<EmbeddedBroker, BrokerError> {
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
    // rumqttd binds in its own thread and only logs a failure there; find out here. The
    // port is free again when the probe drops, and taken by rumqttd a moment later.
    // Port 0 (a demo or test broker) becomes the free port the probe was given.
    let listen = match s.listen {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.local_addr())
                .map_err(|source| BrokerError::Bind { addr, source })?,
        ),
        None => None,
    };
    // The TLS front binds for real; rumqttd gets a loopback port of its own behind it.
    let front = match (s.tls_listen, tls) {
        (Some(addr), Some(tls)) => {
            let std_listener = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| BrokerError::Bind { addr, source })?;
            let internal = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|source| BrokerError::Bind { addr, source })?;
            Some((std_listener, tls, internal))
        }
        _ => None,
    };

    let connections = {
        let mut c = ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: s.max_payload,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        };
        if !s.allow_anonymous {
            let users = Arc::new(users);
            c.set_auth_handler(move |_client: String, user: String, pass: String| {
                let ok = users
                    .get(&user)
                    .is_some_and(|secret| secret.matches(pass.as_bytes()));
                if !ok {
                    tracing::warn!(%user, "embedded broker: login refused");
                }
                async move { ok }
            });
        }
        c
    };
    let server = |name: &str, listen, tls| ServerSettings {
        name: name.to_string(),
        listen,
        tls,
        next_connection_delay_ms: 1,
        connections: connections.clone(),
    };
    let mut v4 = std::collections::HashMap::new();
    if let Some(addr) = listen {
        v4.insert("mqtt".to_string(), server("mqtt", addr, None));
    }
    if let Some((_, _, internal)) = &front {
        v4.insert("mqtts".to_string(), server("mqtts", *internal, None));
    }
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: s.max_connections + 1,
            max_outgoing_packet_count: 200,
            // One segment holds at least one message of the largest size allowed.
            max_segment_size: (s.max_payload + 64 * 1024).max(1 << 20),
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(v4),
        ..Config::default()
    };
    let mut broker = Broker::new(config);
    let (mut link_tx, link_rx) = broker
        .link("skygate-ingest")
        .map_err(|e| BrokerError::Start(format!("in-process link: {e}")))?;
    link_tx
        .subscribe("#")
        .map_err(|e| BrokerError::Start(format!("in-process subscription: {e}")))?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            // Returns only when every listener has failed.
            match broker.start() {
                Ok(()) => tracing::error!("embedded broker: every listener stopped"),
                Err(e) => tracing::error!(error = %e, "embedded broker stopped"),
            }
        })
        .map_err(|e| BrokerError::Start(format!("thread: {e}")))?;
    if let Some((listener, tls, internal)) = front {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|source| BrokerError::Bind {
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
    let (hub_tx, hub_rx) = mpsc::channel(16);
    tokio::spawn(hub(link_tx, link_rx, hub_rx));
    tracing::info!(
        listen = ?listen,
        tls_listen = ?s.tls_listen,
        users = s.users.len(),
        anonymous = s.allow_anonymous,
        "embedded MQTT broker started"
    );
    Ok(EmbeddedBroker { hub: hub_tx })
}

/// Relays each TLS connection to rumqttd's internal listener, byte for byte.
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

struct Subscriber {
    name: String,
    filters: Vec<TopicFilter>,
    tx: mpsc::Sender<Message>,
}

/// Owns the in-process link and the subscriber list. Ends when the link closes.
async fn hub(
    // Also keeps the link (and its subscription) alive while the hub runs.
    mut link_tx: rumqttd::local::LinkTx,
    mut link_rx: rumqttd::local::LinkRx,
    mut cmds: mpsc::Receiver<HubCmd>,
) {
    let mut subs: Vec<Subscriber> = Vec::new();
    let mut unclaimed: HashSet<String> = HashSet::new();
    loop {
        let note = tokio::select! {
            Some(cmd) = cmds.recv() => {
                match cmd {
                    HubCmd::Subscribe { name, filters, reply } => {
                        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
                        if reply.send(rx).is_ok() {
                            tracing::debug!(driver = %name, filters = filters.len(), "subscribed to the embedded broker");
                            subs.push(Subscriber { name, filters, tx });
                        }
                    }
                    HubCmd::Publish(m) => {
                        if let Err(e) = link_tx.publish(m.topic, m.payload.to_vec()) {
                            tracing::warn!(error = %e, "embedded broker: in-process publish failed");
                        }
                    }
                }
                continue;
            }
            n = link_rx.next() => n,
        };
        let forward = match note {
            Ok(Some(Notification::Forward(f))) => f,
            Ok(_) => continue,
            Err(e) => {
                tracing::error!(error = %e, "embedded broker link closed");
                return;
            }
        };
        let topic = String::from_utf8_lossy(&forward.publish.topic).into_owned();
        let msg = Message {
            topic,
            payload: forward.publish.payload,
        };
        let mut claimed = false;
        let mut gone = Vec::new();
        for (i, s) in subs.iter().enumerate() {
            if !s.filters.iter().any(|f| f.matches(&msg.topic)) {
                continue;
            }
            claimed = true;
            if s.tx.send(msg.clone()).await.is_err() {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            let s = subs.swap_remove(i);
            tracing::debug!(driver = %s.name, "unsubscribed from the embedded broker");
        }
        if !claimed && unclaimed.len() < UNCLAIMED_LOGGED && unclaimed.insert(msg.topic.clone()) {
            tracing::info!(topic = %msg.topic, "embedded broker: no mqtt driver subscribes to this topic; its messages are dropped");
        }
    }
}
