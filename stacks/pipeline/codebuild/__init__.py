"""Scripts the pipeline's CodeBuild steps run from the source checkout (stdlib only: no app dependencies)."""
