"""Constructs of the InferenceStack: the model server image, the model's S3 access, the applied chart."""
