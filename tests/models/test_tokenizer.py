from transformers import CLIPTokenizer

from diffusia.models.tokenizer import write_clip_tokenizer

# Token ids of Stable Diffusion v1.5's tokenizer (openai/clip-vit-large-patch14) for these prompts.
SD15_IDS = {
    "a photograph of an astronaut riding a horse": [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407],
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
}


def test_tokenizer_matches_stable_diffusion(tmp_path):
    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path))
    assert len(tok) == 49408
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    assert tok.model_max_length == 77
    for prompt, ids in SD15_IDS.items():
        assert tok(prompt).input_ids == ids
    padded = tok("a red sneaker", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[-1] == 49407
