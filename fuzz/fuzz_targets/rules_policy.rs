//! Fuzz target `rules_policy`: the check logic is `tenant_vault_tests::fuzz::rules_policy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tenant_vault_tests::fuzz::rules_policy(data));
