"""PaddlePaddle inference programs (legacy ProgramDesc and PIR JSON)."""
