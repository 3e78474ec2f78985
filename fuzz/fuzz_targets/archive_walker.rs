//! Fuzz target `archive_walker`: the check logic is `tenant_vault_tests::fuzz::archive_walker`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tenant_vault_tests::fuzz::archive_walker(data));
