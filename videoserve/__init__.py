"""videoserve: the local web demo (``tokvid-serve``): one loaded pipeline behind a page and a JSON API.

It may import core and pipelines (and, through them, the models), plus FastAPI and uvicorn, which
come with the optional ``serve`` extra: ``pip install -e .[serve]``.
"""
