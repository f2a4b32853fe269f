//! Integration tests: real PostgreSQL, real servers on real ports, real gRPC clients.
mod helpers;

mod http_api;
mod list_cancel;
mod observability;

mod auth;
mod bench;
mod cli_client;
mod credits;
mod fakes;
mod gateways;
mod grpcurl;
mod pgproxy;
mod processes;
mod python_client;
mod races;
mod reliability;
mod submit_poll;
mod watch;
mod webhooks;
mod workers;
