"""The creditwatch Python SDK.

`creditwatch.client.testing.ServerProcess` starts a real server for tests.
The typed service clients are built on the generated stubs in `creditwatch.v1`.
"""

__all__: list[str] = []
