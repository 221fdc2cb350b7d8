"""The HTTP service: the BentoML class (bento.py) and the layers only it uses.

`bentoml serve serving.service.bento:Digits` or `digits serve` (serve.py) runs it. Importing this
package imports nothing: `digits serve` reads settings.py without loading BentoML.
"""
