//! Comparison of a new service's shadow response with the monolith's (status, headers, JSON body
//! with ignore rules and noise detection). Pure logic: no sockets, no pingora; the proxy hands it
//! two responses and records what it says. Filled in by the shadow-compare issue.
