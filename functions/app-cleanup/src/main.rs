//! app-cleanup: not built yet; every invocation answers so, and nothing is changed.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    rack_secrets::start(|_rack, _event| async move {
        Err(rack_secrets::Error::Permanent(
            "app-cleanup is not built yet in this version of rack-secrets".to_owned(),
        ))
    })
    .await
}
