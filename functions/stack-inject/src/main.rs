//! stack-inject: the CloudFormation macro that points task definitions at the app's secret,
//! and the custom resource that makes a release's version live.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    rack_secrets::start(|rack, event| async move {
        let deadline = rack_secrets::deadline_of(&event.context);
        rack_secrets::stack_inject::handle(rack, event.payload, deadline).await
    })
    .await
}
