"""The one thing pyproject.toml cannot declare stably yet: the C extension.

The load generator's timed socket (services/loadgen/_timed_socket.c): a thread that writes each
request at its microsecond and reads answers with the kernel's arrival stamps. Optional: without a
C compiler the package still installs and the h2 transport writes from the event loop instead
(the Dockerfiles install gcc in their build stage).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "etude.services.loadgen._timed_socket",
            sources=["services/loadgen/_timed_socket.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
