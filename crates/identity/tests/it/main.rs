//! Integration tests of `infernet-identity`.

mod interop;
