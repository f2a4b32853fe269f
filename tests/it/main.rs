//! Integration tests: real PostgreSQL, real servers on real ports, real gRPC clients.
//! Shared support (harness, fake gateways, a PostgreSQL proxy) is the
//! `wavalidate-test-support` crate in `support/`.

mod http_api;
mod list_cancel;
mod observability;

mod auth;
mod bench;
mod cli_client;
mod credits;
mod edge;
mod gateways;
mod grpcurl;
mod numbering;
mod outages;
mod pool;
mod pool_grants;
mod processes;
mod proweblook;
mod python_client;
mod races;
mod retention;
mod security;
mod submit_poll;
mod waha_states;
mod watch;
mod webhooks;
mod workers;
