"""cdk8s charts applied to the cluster by the CDK stacks."""
