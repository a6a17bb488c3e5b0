"""The stream the fan-out benchmark broadcasts on: one group, one item updated again and again."""

from pydantic import BaseModel


class Tick(BaseModel):
    n: int
    t: float  # time.time() when the handler called set()
    pad: str = ""


config = {"name": "fanout", "schema": Tick}
