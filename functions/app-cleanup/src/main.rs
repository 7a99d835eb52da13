//! app-cleanup: schedules an app's secret for deletion when the app's stack is deleted.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    rack_secrets::start(|rack, event| async move {
        rack_secrets::cleanup::handle(&rack, event.payload).await
    })
    .await
}
