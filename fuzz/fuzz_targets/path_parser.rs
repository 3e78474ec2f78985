//! Fuzz target `path_parser`: the check logic is `tenant_vault_tests::fuzz::path_parser`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tenant_vault_tests::fuzz::path_parser(data));
