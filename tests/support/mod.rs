//! Test hygiene shared by the `it` and `web` test binaries (each includes this folder with
//! `#[path]`): a test that cannot run here says so or fails ([`skip`]), and whatever a test
//! starts, it stops ([`process`]).

pub(crate) mod process;
pub(crate) mod skip;
