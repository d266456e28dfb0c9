// Each example uses part of these helpers.
#![allow(dead_code)]

pub(crate) mod flv;
