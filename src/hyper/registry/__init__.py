"""A client of the OCI distribution spec: pull and push images from and to registries."""
