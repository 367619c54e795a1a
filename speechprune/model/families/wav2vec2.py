from .base import Family


class Wav2Vec2(Family):
    name = "wav2vec2"
    model_type = "wav2vec2"
    base_class = "Wav2Vec2Model"
    task_prefix = "wav2vec2"
