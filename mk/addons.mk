# Add-ons: typed cdk8s constructs for the CRDs in ../shared/crds.
.PHONY: import-crds
import-crds: node_modules/.stamp  ## regenerate imports/ from ../shared/crds (byte-stable)
	tools/import_crds.sh
