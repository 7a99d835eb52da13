"""A Convox-shaped rack in the local emulator, for the demo and the cargo-lambda tests.

Every command talks only to AWS_ENDPOINT_URL (scripts/with-moto.sh sets it) and prints JSON.
It never prints a secret value: secrets are described by ARN, version ids, labels and key
names, and compared with an expected env file without showing either side.
"""

import argparse
import json
import os
import sys

import boto3

APP_TEMPLATE = {
    "Parameters": {
        "Release": {"Type": "String"},
        "SecretsManagerEnv": {"Type": "String", "Default": ""},
    },
    "Resources": {"Settings": {"Type": "AWS::S3::Bucket"}},
    "Outputs": {"Release": {"Value": {"Ref": "Release"}}},
}


def client(service):
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if not endpoint.startswith("http://127.0.0.1:"):
        sys.exit("AWS_ENDPOINT_URL must name the local emulator (run through scripts/with-moto.sh)")
    return boto3.client(service, endpoint_url=endpoint)


def create_app(args):
    kms = client("kms")
    key_id = kms.create_key(Description=f"rack {args.rack}")["KeyMetadata"]["KeyId"]
    stack = f"{args.rack}-{args.app}"
    tags = {
        "System": "convox",
        "Type": "app",
        "Rack": args.rack,
        "Name": args.app,
        "Generation": "2",
    }
    cfn = client("cloudformation")
    cfn.create_stack(
        StackName=stack,
        TemplateBody=json.dumps(APP_TEMPLATE),
        Parameters=[
            {"ParameterKey": "Release", "ParameterValue": args.release},
            {"ParameterKey": "SecretsManagerEnv", "ParameterValue": args.setting},
        ],
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )
    resource = cfn.describe_stack_resource(StackName=stack, LogicalResourceId="Settings")
    bucket = resource["StackResourceDetail"]["PhysicalResourceId"]
    # CloudFormation copies stack tags onto the bucket; moto does not, so do it here.
    client("s3").put_bucket_tagging(
        Bucket=bucket,
        Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]},
    )
    # A notification setting of the bucket's own, which promotion must keep. (moto answers
    # a bucket without any setting with a document the AWS SDK cannot read.)
    sqs = client("sqs")
    queue = sqs.create_queue(QueueName=f"{bucket}-removed")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    client("s3").put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn["Attributes"]["QueueArn"],
                    "Events": ["s3:ObjectRemoved:*"],
                }
            ]
        },
    )
    return {"stack": stack, "bucket": bucket, "key_id": key_id}


def put_object(args):
    with open(args.file, "rb") as body:
        client("s3").put_object(Bucket=args.bucket, Key=args.key, Body=body.read())
    return {"bucket": args.bucket, "key": args.key}


def describe_secret(args):
    secret = client("secretsmanager").describe_secret(SecretId=args.name)
    deleted = secret.get("DeletedDate")
    return {
        "arn": secret["ARN"],
        "deletion_date": deleted.isoformat() if deleted else None,
        "versions": secret.get("VersionIdsToStages", {}),
        "tags": {tag["Key"]: tag["Value"] for tag in secret.get("Tags", [])},
    }


def compare_version(args):
    value = client("secretsmanager").get_secret_value(
        SecretId=args.name, VersionId=args.version_id
    )["SecretString"]
    stored = json.loads(value)
    expected = {}
    with open(args.env_file, encoding="utf-8") as env:
        for line in env.read().split("\n"):
            key, sep, val = line.partition("=")
            if sep and key.strip():
                expected[key.strip()] = val
    differ = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
    return {"keys": sorted(stored), "same": not differ, "differing_keys": differ}


def delete_app(args):
    cfn = client("cloudformation")
    stack = f"{args.rack}-{args.app}"
    stack_id = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackId"]
    cfn.delete_stack(StackName=stack)
    return {"stack": stack, "stack_id": stack_id}


def presign_put(args):
    s3 = client("s3")
    s3.create_bucket(Bucket=args.bucket)
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": args.bucket, "Key": args.key}, ExpiresIn=3600
    )
    return {"url": url}


def read_json_object(args):
    body = client("s3").get_object(Bucket=args.bucket, Key=args.key)["Body"].read()
    return json.loads(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    app = commands.add_parser("create-app", help="a KMS key and an app stack with its bucket")
    app.add_argument("--rack", required=True)
    app.add_argument("--app", required=True)
    app.add_argument("--release", required=True)
    app.add_argument("--setting", default="Yes", help="the stack's SecretsManagerEnv")
    app.set_defaults(run=create_app)

    put = commands.add_parser("put-object", help="upload a file")
    put.add_argument("--bucket", required=True)
    put.add_argument("--key", required=True)
    put.add_argument("--file", required=True)
    put.set_defaults(run=put_object)

    describe = commands.add_parser("describe-secret", help="ARN, labelled versions, tags")
    describe.add_argument("--name", required=True)
    describe.set_defaults(run=describe_secret)

    compare = commands.add_parser("compare-version", help="a version against an env file")
    compare.add_argument("--name", required=True)
    compare.add_argument("--version-id", required=True)
    compare.add_argument("--env-file", required=True)
    compare.set_defaults(run=compare_version)

    delete = commands.add_parser("delete-app", help="delete an app's stack")
    delete.add_argument("--rack", required=True)
    delete.add_argument("--app", required=True)
    delete.set_defaults(run=delete_app)

    presign = commands.add_parser("presign-put", help="a presigned PUT URL, as CloudFormation gives")
    presign.add_argument("--bucket", required=True)
    presign.add_argument("--key", required=True)
    presign.set_defaults(run=presign_put)

    read = commands.add_parser("read-json", help="a JSON object's content")
    read.add_argument("--bucket", required=True)
    read.add_argument("--key", required=True)
    read.set_defaults(run=read_json_object)

    args = parser.parse_args()
    print(json.dumps(args.run(args), sort_keys=True))


if __name__ == "__main__":
    main()
