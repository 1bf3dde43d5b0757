"""A local SageMaker multi-model endpoint: runtime front, platform, backends."""
