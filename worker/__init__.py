"""ephemesh worker side: RQ jobs, the payload store, records, the sweeper.

Imports point one way: web → worker → converter.
"""
