//! The engine contract: everything an engine mounted behind Zafe's router may see.
//!
//! An engine (kv, transit, approle, ...) gets one [`Request`] at a time with a [`Ctx`]: its own
//! mount ([`Mount`]), a [`View`] of storage that prefixes every key with the mount's folder, the
//! authenticated [`Caller`] and a [`SystemView`] (the clock, limits, derived keys). It answers with
//! a typed [`Response`] or an [`Error`]. That is all: the crate depends on `zafe-core` and small
//! data crates only, so an engine cannot name the server, the barrier, the token store or HTTP.
//!
//! Auth engines do not mint tokens. They answer [`Response::Login`] with a [`Grant`] (policies,
//! metadata, lifetime request); the core checks it and mints the token, as OpenBao's approle
//! backend returns `logical.Auth` and its core registers it.

#![warn(missing_docs)]

mod caller;
mod clock;
mod engine;
mod error;
pub mod params;
mod request;
mod response;
mod status;
mod storage;
mod system;

pub use caller::Caller;
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use engine::{Ctx, Engine, Mount};
pub use error::{Error, Result};
pub use params::{LifetimeRequest, MAX_LIST, parse_duration, parse_ttl, rfc3339, str_field};
pub use request::{Operation, Request, RequestBody, RequestToken};
pub use response::{Grant, Response};
pub use status::Status;
pub use storage::{Expect, Record, Storage, View, Write};
pub use system::SystemView;
