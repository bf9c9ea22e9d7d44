"""``mlcp demo``: the whole lifecycle played against real Kafka, PostgreSQL and the five services.

Modules: ``runner`` (stack, services, output, summary), ``scenario`` (the steps and their
deadlines), ``inference`` (a stand-in inference service), ``timeline`` (the bus, read live),
``config`` (the packaged ``demo.yaml``, renamed per run). See docs/demo.md.
"""
