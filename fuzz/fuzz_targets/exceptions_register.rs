//! Fuzz target `exceptions_register`: the check logic is `tenant_vault_tests::fuzz::exceptions_register`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tenant_vault_tests::fuzz::exceptions_register(data));
