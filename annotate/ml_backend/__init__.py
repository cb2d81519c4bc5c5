"""SAM2-assisted review: a Label Studio ML backend that turns a reviewer's point or box into a brush mask."""
