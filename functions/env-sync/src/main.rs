//! env-sync: stages each release's environment in Secrets Manager as it is written to S3.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    rack_secrets::start(|rack, event| async move {
        let deadline = rack_secrets::deadline_of(&event.context);
        rack_secrets::sync::handle(&rack, event.payload, deadline).await
    })
    .await
}
