"""The packet tracer: live traces through a lab, and the report shared with the offline tracer."""
