"""The publishing side of changefeed: API write actions to the ``actions`` topic.

* :mod:`producers.publisher` - :class:`~producers.publisher.Publisher`, kafka-python with a
  durable on-disk spool (:mod:`producers.spool`) for when the broker cannot be reached;
* :mod:`producers.demo_api` - a small business API (projects, expense reports, expenses)
  whose every write publishes ApiActions;
* :mod:`producers.loadgen` - realistic traffic for it, over HTTP or published directly.

Nothing is imported here, so that ``import producers.<module>`` stays cheap.
"""
