"""The gateway's routes, one module per part of the tinker SDK's API."""
