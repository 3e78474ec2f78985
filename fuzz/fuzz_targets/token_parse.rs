//! Fuzz target `token_parse`: the check logic is `tenant_vault_tests::fuzz::token_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tenant_vault_tests::fuzz::token_parse(data));
