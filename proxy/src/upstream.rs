//! The upstreams (the monolith and the new services) as ready-made pingora peers: addresses are
//! resolved and options set once at start, so choosing one per request is a pointer copy.

use std::collections::HashMap;
use std::sync::Arc;

use pingora::upstreams::peer::HttpPeer;

use crate::config::{Config, Upstream};

/// The side that serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// The monolith.
    Legacy,
    /// The route's new service.
    Service,
}

pub struct UpstreamPeer {
    pub cfg: Upstream,
    pub peer: HttpPeer,
}

pub struct Upstreams {
    pub legacy: Arc<UpstreamPeer>,
    pub services: HashMap<String, Arc<UpstreamPeer>>,
}

impl Upstreams {
    pub fn new(cfg: &Config) -> Upstreams {
        Upstreams {
            legacy: Arc::new(peer(&cfg.legacy)),
            services: cfg
                .services
                .iter()
                .map(|(n, u)| (n.clone(), Arc::new(peer(u))))
                .collect(),
        }
    }

    /// The upstream for a side; a service missing from the config (rules are validated against
    /// it, so only a bug gets here) falls back to the monolith.
    pub fn get(&self, service: Option<&str>) -> &Arc<UpstreamPeer> {
        match service {
            Some(name) => self.services.get(name).unwrap_or(&self.legacy),
            None => &self.legacy,
        }
    }
}

fn peer(u: &Upstream) -> UpstreamPeer {
    let mut peer = HttpPeer::new(u.address, u.tls, u.sni.clone());
    let o = &mut peer.options;
    o.connection_timeout = Some(u.connect_timeout);
    o.total_connection_timeout = Some(u.total_timeout);
    o.read_timeout = Some(u.read_timeout);
    o.write_timeout = Some(u.read_timeout);
    o.idle_timeout = Some(u.idle_timeout);
    o.verify_cert = u.verify_cert;
    o.verify_hostname = u.verify_cert;
    UpstreamPeer {
        cfg: u.clone(),
        peer,
    }
}
