"""The delivery pipeline: its stack, the stage it deploys per environment, their composition, and the
scripts its CodeBuild steps run (``codebuild/``)."""
