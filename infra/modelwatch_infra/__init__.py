"""modelwatch's AWS resources as a Pulumi program (see infra/Pulumi.yaml and docs/aws.md)."""
