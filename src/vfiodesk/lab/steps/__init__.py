"""Demo steps, one module per feature; each registers with vfiodesk.lab.demo.step."""
