"""The accuracy-vs-cost sweep: build a grid of variants, measure each on a target, pick one."""
