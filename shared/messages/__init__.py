"""One module per topic message: its headers, its encoder and its decoder, used by every producer and consumer.

- ``raw_batch``: an OTLP batch the receiver enqueued (raw logs and raw metrics topics);
- ``canonical_event``: one redacted event for the signer (canonical topic);
- ``dead_letter``: a message that failed permanently, with the context of the failure (dead-letter topic).

Every topic is untrusted input: whoever can write to the broker can put any bytes and any headers there.
The decoders check every header and field a worker reads and raise ``InvalidMessage`` with a reason that
never quotes payload text; workers dead-letter such a message and move on. The messages a stage acts on are
authenticated (``shared.messages.auth``), so a writer without the producing stage's key cannot inject them.
"""

from shared.messages.errors import InvalidMessage

__all__ = ["InvalidMessage"]
