//! `strangler run`: builds the pingora server from a validated config — the proxy service on each
//! listener, the admin service, a background service for SIGHUP and rule-file watching, and one
//! that stops the relay — then runs it until SIGTERM (graceful: keep serving for
//! `server.grace_period`, then stop the relay and give in-flight work `server.shutdown_timeout`)
//! or SIGQUIT (graceful upgrade hand-over).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;
use prometheus::Registry;
use strangler_store::Store;
use tracing::{info, warn};

use crate::admin::Admin;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Strangler;
use crate::reload::LiveRules;
use crate::store_runtime::StoreRuntime;
use crate::upstream::Upstreams;

/// Runs the proxy; returns only on a start-up error.
pub fn run(cfg: &Config, upgrade: bool) -> Result<()> {
    let admin_token = admin_token(cfg)?;
    let mut addrs: Vec<(&'static str, std::net::SocketAddr)> =
        cfg.listen.iter().map(|&a| ("listen", a)).collect();
    addrs.push(("admin", cfg.admin));
    // An upgrade takes the old process's sockets: they are in use on purpose.
    if !upgrade {
        crate::listeners::check_free(&addrs)?;
    }
    let registry = Registry::new();
    let metrics = Metrics::new(&registry)?;
    let rules = LiveRules::load(&cfg.rules, cfg.service_names(), metrics.clone())
        .map_err(|d| anyhow!("invalid rules, not starting:\n{d}"))?;
    if let Some(d) = crate::dual_write::missing_region(cfg, &rules.current().rules) {
        return Err(anyhow!("not starting:\n{d}"));
    }
    // The one store: connected on its runtime, then a clone to each component that keeps state.
    // Fails loudly when it cannot be opened: the proxy must not accept writes it cannot record.
    let store_runtime = StoreRuntime::start()?;
    let (url, memory) = (cfg.store_url.clone(), cfg.relay.memory);
    let store =
        store_runtime.block_on(async move { Store::connect_with(&url, memory).await })??;
    store.register_metrics(&registry)?;
    let dual_write = crate::dual_write::DualWrite::start(cfg, &store, &store_runtime, &registry)?;

    let conf = ServerConf {
        threads: cfg.workers,
        pid_file: cfg.pid_file.clone(),
        upgrade_sock: cfg.upgrade_sock.clone(),
        grace_period_seconds: Some(cfg.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(cfg.shutdown_timeout.as_secs()),
        // One current-thread runtime per worker: no cross-thread task stealing and wake-ups on the
        // request path (connections stay on the thread that accepted them).
        work_stealing: false,
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    let conf = server.configuration.clone();

    let rollouts = crate::rollout::Rollouts::new(store.clone(), metrics.rollout.clone());
    let hash_with = Arc::clone(&dual_write);
    let shadowing = Arc::new(crate::shadow::Shadowing::start(
        store.clone(),
        cfg.mismatch_retention,
        metrics.shadow.clone(),
        Arc::new(move |b: &[u8]| hash_with.hash(b)),
        Arc::clone(&rollouts),
    )?);
    let strangler = Strangler {
        rules: Arc::clone(&rules),
        upstreams: Arc::new(Upstreams::new(cfg)),
        metrics: metrics.clone(),
        body_limit: cfg.body_buffer_limit,
        connector: pingora::connectors::http::Connector::new(None),
        dual_write: Arc::clone(&dual_write),
        clients: crate::proxy::ClientTimeouts {
            body: cfg.client_body_timeout,
            keepalive_secs: cfg.keepalive_timeout.as_secs(),
            tunnel_idle: cfg.tunnel_idle_timeout,
        },
        shadowing: Arc::clone(&shadowing),
        rollouts: Arc::clone(&rollouts),
        unrouted: crate::metrics::SideStats::new(&metrics, crate::reload::UNROUTED, "none"),
    };
    let mut server_options = HttpServerOptions::default();
    server_options.h2c = true;
    // Patched pingora-core (third_party/README.md): the whole header within this time.
    server_options.h1_header_timeout = Some(cfg.client_header_timeout);
    let mut proxy = pingora::proxy::ProxyServiceBuilder::new(&conf, strangler)
        .name("strangler proxy")
        .server_options(server_options)
        .build();
    let mut certs = Vec::new();
    for addr in &cfg.listen {
        let Some(t) = cfg.tls.iter().find(|t| t.addr == *addr) else {
            proxy.add_tcp(&addr.to_string());
            continue;
        };
        let c = crate::tls::Certs::load(&t.certs, metrics.tls_reloads.clone())
            .map_err(|e| anyhow!("listen {addr}: {e}"))?;
        let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")?;
        settings.set_cert_resolver(Arc::new(crate::tls::Resolver(Arc::clone(&c))));
        settings.enable_h2();
        proxy.add_tls_with_settings(&addr.to_string(), None, settings);
        certs.push(c);
    }
    crate::tls::watch(certs.clone());
    let mut admin = Service::new(
        "strangler admin".to_string(),
        pingora::apps::http_app::HttpServer::new_app(Admin {
            rules: Arc::clone(&rules),
            registry,
            dual_write: Arc::clone(&dual_write),
            store,
            shadowing: Arc::clone(&shadowing),
            rollouts: Arc::clone(&rollouts),
            token: admin_token,
            listeners: cfg.listen.clone(),
            consumers: cfg.consumers.clone(),
        }),
    );
    admin.add_tcp(&cfg.admin.to_string());
    let rollout = background_service(
        "strangler rollouts",
        RolloutTasks {
            rollouts,
            rules: Arc::clone(&rules),
            held: dual_write
                .metrics
                .lease_held
                .with_label_values(&["rollout"]),
        },
    );
    let checks = background_service(
        "strangler stream checks",
        StreamChecks {
            cfg: cfg.clone(),
            rules: Arc::clone(&rules),
            metrics: dual_write.metrics.clone(),
        },
    );
    let reloader = background_service("strangler rules", Reloader { rules, certs });
    let relay = background_service(
        "strangler relay",
        RelayStopper {
            dual_write,
            grace_period: cfg.grace_period,
            shutdown_timeout: cfg.shutdown_timeout,
        },
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(reloader);
    server.add_service(relay);
    server.add_service(rollout);
    server.add_service(checks);
    server.add_service(background_service(
        "strangler listeners",
        crate::listeners::Watch { addrs },
    ));
    info!(config = %cfg.file.display(), rules = %cfg.rules.display(), listen = ?cfg.listen, admin = %cfg.admin, workers = cfg.workers, store = %cfg.store_url, "strangler starting");
    server.run_forever();
}

/// Stops the relay on SIGTERM. Requests keep coming (and enqueueing events) during the grace
/// period, so the relay keeps sending until it ends; then it is stopped from a blocking task,
/// which pingora's runtime shutdown waits for (up to `shutdown_timeout`), so the process does not
/// exit in the middle of a PutRecords call.
struct RelayStopper {
    dual_write: Arc<crate::dual_write::DualWrite>,
    grace_period: Duration,
    shutdown_timeout: Duration,
}

#[async_trait]
impl BackgroundService for RelayStopper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        let (dual_write, grace, timeout) = (
            Arc::clone(&self.dual_write),
            self.grace_period,
            self.shutdown_timeout,
        );
        let _ = tokio::task::spawn_blocking(move || {
            std::thread::sleep(grace);
            if dual_write.stop_relay(timeout) {
                info!("Relay stopped for shutdown");
            } else {
                warn!(timeout = ?timeout, "Relay did not stop within the shutdown timeout; unsent events stay in the outbox");
            }
        })
        .await;
    }
}

/// Every replica's rollout sync, and the controller (which waits for the store's lease).
struct RolloutTasks {
    rollouts: Arc<crate::rollout::Rollouts>,
    rules: Arc<LiveRules>,
    /// `strangler_lease_held{lease="rollout"}`.
    held: prometheus::IntGauge,
}

#[async_trait]
impl BackgroundService for RolloutTasks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let sync = crate::rollout::sync::run(Arc::clone(&self.rollouts), Arc::clone(&self.rules));
        let control = crate::rollout::controller::run(
            Arc::clone(&self.rollouts),
            Arc::clone(&self.rules),
            self.held.clone(),
        );
        tokio::select! {
            () = sync => {}
            () = control => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The publish streams' security checks (see `stream_check`).
struct StreamChecks {
    cfg: Config,
    rules: Arc<LiveRules>,
    metrics: strangler_events::Metrics,
}

#[async_trait]
impl BackgroundService for StreamChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let run = crate::stream_check::run(
            self.cfg.clone(),
            Arc::clone(&self.rules),
            self.metrics.clone(),
        );
        tokio::select! {
            () = run => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Reloads rules on SIGHUP and on file changes; HTTPS certificates on SIGHUP too (their file
/// changes are watched by `tls::watch`).
struct Reloader {
    rules: Arc<LiveRules>,
    certs: Vec<Arc<crate::tls::Certs>>,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Err(e) = self.rules.watch(Duration::from_millis(150)) {
            warn!(error = %e, path = %self.rules.path().display(), "Cannot watch rule files; reload with SIGHUP or POST /api/reload");
        }
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "Cannot listen for SIGHUP");
                let _ = shutdown.changed().await;
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let rules = Arc::clone(&self.rules);
                    let certs = self.certs.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        let _ = rules.reload("SIGHUP");
                        for c in &certs {
                            c.reload(true, "SIGHUP");
                        }
                    })
                    .await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The admin API's token from the environment variable the config names. Commands move
/// production traffic: without a token the admin listener must be on loopback.
fn admin_token(cfg: &Config) -> Result<Option<String>> {
    let token = match &cfg.admin_token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            _ => anyhow::bail!(
                "admin_token_env names {var}, which is not set (or empty): refusing to start without the admin token"
            ),
        },
        None => None,
    };
    if token.is_none() && !cfg.admin.ip().is_loopback() {
        anyhow::bail!(
            "the admin listener {} is not on loopback and no admin token is set (admin_token_env): \
             anyone reaching it could move traffic; set a token or listen on 127.0.0.1",
            cfg.admin
        );
    }
    Ok(token)
}
