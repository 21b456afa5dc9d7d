"""The events API's read side: an index of the ``changes`` topic and the queries over it.

Every worker keeps its own index of *all* partitions of ``changes`` (:mod:`.indexer` feeds
:mod:`.index`), so a list, fetch or long poll gets the same answer whichever worker serves
it. Pages are cut with per-partition offset cursors (:mod:`.cursor`, :mod:`.paging`), which
is what makes "no gap, no repeat while new events keep arriving" hold.
"""
