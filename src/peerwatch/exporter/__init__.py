"""``peerwatch exporter``: what ``peerwatch inspect`` sees on this host, for Prometheus.

``groups`` bounds the label cardinality (top-K process/peer/port groups plus
"other", pure), ``host`` reads and judges every socket once per scrape, and
``collector`` turns one reading into metric families (prometheus-client, from
the ``server`` extra). Reading is on demand: nothing runs between scrapes.
"""
