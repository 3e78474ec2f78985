//! Fuzz target `grpc_handlers`: the check logic is `tenant_vault_tests::fuzz::grpc_handlers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tenant_vault_tests::fuzz::grpc_handlers(data));
