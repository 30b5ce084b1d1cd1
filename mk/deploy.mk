# Deploying to AWS with the pinned CDK CLI. Each target first checks the AWS credentials (tools/aws_preflight.py:
# a few seconds, names what is missing and how to set it), then runs cdk with the same CONTEXT flags as synth.
# CDK_ARGS passes more flags to cdk, e.g. CDK_ARGS="--require-approval never".
AWS_PREFLIGHT = $(BIN)/python -m tools.aws_preflight $(CONTEXT)

.PHONY: preflight bootstrap diff deploy destroy
preflight: $(VENV)/.stamp-cdk  ## check the AWS credentials and the account/region the configuration deploys to
	$(AWS_PREFLIGHT)

bootstrap: $(VENV)/.stamp-cdk node_modules/.stamp  ## cdk bootstrap of the configured account and region (once per account/region)
	$(AWS_PREFLIGHT)
	npx cdk bootstrap $(CONTEXT) $(CDK_ARGS)

diff: $(VENV)/.stamp-cdk node_modules/.stamp  ## cdk diff --all against the deployed stacks (CONTEXT="-c env=prod")
	$(AWS_PREFLIGHT)
	npx cdk diff --all $(CONTEXT) $(CDK_ARGS)

deploy: $(VENV)/.stamp-cdk node_modules/.stamp  ## cdk deploy --all: Network -> Cluster -> Addons -> Inference (CONTEXT=, CDK_ARGS=)
	$(AWS_PREFLIGHT)
	npx cdk deploy --all $(CONTEXT) $(CDK_ARGS)

destroy: $(VENV)/.stamp-cdk node_modules/.stamp  ## cdk destroy --all (docs/runbook.md "Teardown" first)
	$(AWS_PREFLIGHT)
	npx cdk destroy --all $(CONTEXT) $(CDK_ARGS)
