"""The JSON API at /api/v1: token auth (auth.py), problem details (problems.py), pydantic
schemas (schemas.py), the operation registry and OpenAPI generator (spec.py), the views."""
