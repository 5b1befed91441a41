defmodule Viva.LowLevelTest do
  # Viva.LowLevel (and Viva.Safetensors, Viva.Tokenizer) over the HF fixtures: fp8 linears
  # against a naive matmul, embedding tables, a decode_step loop against generate, and bad
  # arguments that must come back as {:error, _} with the VM and the resources intact.
  use ExUnit.Case, async: true

  alias :viva_tensor_test_support, as: Support
  alias Viva.LowLevel, as: L

  defp fixture(name), do: Support.fixture(String.to_charlist(name)) |> List.to_string()
  defp expected(name), do: Support.expected(String.to_charlist(name))

  # ---- helpers: seeded random data, f32/f16/bf16 bits, a naive matmul ----

  # `n` uniform values in [-scale, scale), reproducible for a seed.
  defp random(n, seed, scale) do
    state = :rand.seed_s(:exsss, {seed, 7, 11})

    {xs, _} =
      Enum.map_reduce(1..n, state, fn _, s ->
        {u, s} = :rand.uniform_s(s)
        {(2 * u - 1) * scale, s}
      end)

    xs
  end

  # What the NIF sees: each value rounded to f32.
  defp as_f32(xs), do: xs |> L.f32_binary() |> L.to_floats()
  defp f32(x), do: hd(as_f32([x]))

  # bf16 is the high half of an f32: truncating keeps 8 significant bits.
  defp bf16_bits(x) do
    <<hi::16, _::16>> = <<x::float-32>>
    hi
  end

  defp bf16_value(x) do
    <<y::float-32>> = <<bf16_bits(x)::16, 0::16>>
    y
  end

  defp bf16_binary(xs), do: for(x <- xs, into: <<>>, do: <<bf16_bits(x)::16-little>>)
  defp f16_binary(xs), do: for(x <- xs, into: <<>>, do: <<x::float-16-little>>)

  defp rows(list, k), do: Enum.chunk_every(list, k)
  defp dot(a, b), do: Enum.zip_reduce(a, b, 0.0, fn x, y, acc -> acc + x * y end)
  defp matmul(x, w, k), do: for(xr <- rows(x, k), do: for(wr <- rows(w, k), do: dot(xr, wr)))
  defp add_bias(y, bias), do: for(row <- y, do: Enum.zip_with(row, bias, &+/2))

  # ---- an E4M3 reference (fp8.rs, written again from the format's definition) ----

  # The magnitudes of codes 0..0x7E (S=0; 0x7F is NaN): subnormals m·2⁻⁹, normals (1 + m/8)·2^(e−7).
  @e4m3 for c <- 0..0x7E,
            do: if(c < 8, do: c / 512, else: (1 + rem(c, 8) / 8) * :math.pow(2, div(c, 8) - 7))

  # Round to the nearest code, ties to the even code (= even mantissa), saturating at 448.
  defp e4m3(v) do
    a = min(abs(v), 448.0)
    {mag, _} = @e4m3 |> Enum.with_index() |> Enum.min_by(fn {q, c} -> {abs(q - a), rem(c, 2)} end)
    if v < 0, do: -mag, else: mag
  end

  # Each `block`-wide chunk of each row: scale = absmax / 448 in f32 (1.0 for a zero chunk),
  # value ≈ e4m3(v / scale) · scale. What `linear_fp8_w8a16` multiplies by.
  defp dequantize(w, k, block) do
    for row <- rows(w, k),
        chunk <- Enum.chunk_every(row, block),
        v <- dequantize_chunk(chunk),
        do: v
  end

  defp dequantize_chunk(chunk) do
    absmax = Enum.max(Enum.map(chunk, &abs/1))
    scale = if absmax > 0, do: f32(absmax / 448), else: 1.0
    for v <- chunk, do: e4m3(f32(v / scale)) * scale
  end

  # fp8.rs `error_bound`: |w − dequant(w)| ≤ |w|·2⁻⁴ + scale·2⁻¹⁰ (3 mantissa bits: half an
  # ulp is ≤ 2⁻⁴ of a normal value; 2⁻⁹ is the subnormal step).
  defp quant_errors(w, k, block) do
    for row <- rows(w, k),
        chunk <- Enum.chunk_every(row, block),
        scale = Enum.max(Enum.map(chunk, &abs/1)) / 448,
        v <- chunk,
        do: abs(v) / 16 + scale / 1024
  end

  # The worst case of the quantization errors in a dot product, Σ (|x| + Δx)(|w| + Δw) − |x||w|,
  # plus 1e-5 of Σ|x||w| for f32 rounding and summation order.
  defp error_bounds(x, dx, w, dw, k) do
    for {xr, dxr} <- Enum.zip(rows(x, k), rows(dx, k)) do
      for {wr, dwr} <- Enum.zip(rows(w, k), rows(dw, k)) do
        Enum.zip_reduce([xr, dxr, wr, dwr], 1.0e-6, fn [a, da, b, db], acc ->
          acc + (abs(a) + da) * (abs(b) + db) - abs(a * b) + 1.0e-5 * abs(a * b)
        end)
      end
    end
  end

  # Same dequantized values on both sides: only f32 rounding and summation order differ.
  defp tight(want), do: for(row <- want, do: Enum.map(row, &(1.0e-5 * (1 + abs(&1)))))

  defp assert_within(got, want, bounds) do
    for {g, e, b} <- Enum.zip([List.flatten(got), List.flatten(want), List.flatten(bounds)]) do
      assert abs(g - e) <= b, "got #{g}, want #{e} ± #{b}"
    end
  end

  defp gelu(x), do: 0.5 * x * (1 + :math.erf(x / :math.sqrt(2)))
  defp silu(x), do: x / (1 + :math.exp(-x))
  defp map2(rows, f), do: for(row <- rows, do: Enum.map(row, f))

  # ---- fp8 prepack and linears ----

  defp prepack(wb, shape, :per_channel), do: L.prepack_fp8_weight(wb, shape)
  defp prepack(wb, shape, block), do: L.prepack_fp8_weight_blocked(wb, shape, block)

  # Two references: the product with the E4M3-rounded weights computed here (tight: both sides
  # multiply the same values), and the exact f64 product (within E4M3's error bound, a worst
  # case: each weight off by ≤ 2⁻⁴ of itself plus 2⁻¹⁰ of its scale). K = 40 is not a multiple
  # of 16 or 32, so the last block of each row is shorter.
  for block <- [:per_channel, 16, 32] do
    test "fp8 #{block}: the four linears against a naive matmul" do
      {m, n, k} = {3, 12, 40}
      block = unquote(block)
      width = if block == :per_channel, do: k, else: block
      # one outlier per row, so a coarse scale for the rest of its block
      w =
        random(n * k, 1, 0.5)
        |> Enum.with_index()
        |> Enum.map(fn {v, i} -> if rem(i, k) == 5, do: 6.0, else: v end)
        |> as_f32()

      x = as_f32(random(m * k, 2, 2.0))
      bias = as_f32(random(n, 3, 1.0))
      input = {L.f32_binary(x), [m, k]}

      assert {:ok, p} = prepack(L.f32_binary(w), [n, k], block)
      assert {:ok, %{n: ^n, k: ^k, block: ^block, bytes: bytes}} = L.packed_info(p)
      # codes: one byte a weight, rows padded to 16 bytes; scales: one f32 a row and block
      assert bytes == n * (div(k + 15, 16) * 16) + n * div(k + width - 1, width) * 4

      exact = add_bias(matmul(x, w, k), bias)
      zeros = List.duplicate(0.0, m * k)
      bound = error_bounds(x, zeros, w, quant_errors(w, k, width), k)
      # W8A16: weights quantized, activations as they are
      own = add_bias(matmul(x, dequantize(w, k, width), k), bias)
      assert {:ok, {out, [^m, ^n]}} = L.linear_fp8_w8a16(input, p, L.f32_binary(bias))
      w8a16 = rows(L.to_floats(out), n)
      assert_within(w8a16, own, tight(own))
      assert_within(w8a16, exact, bound)

      assert {:ok, {nb, [^m, ^n]}} = L.linear_fp8_w8a16(input, p, nil)
      assert_within(add_bias(rows(L.to_floats(nb), n), bias), own, tight(own))

      # W8A8: each input row quantized too, with its own absmax scale
      own8 = add_bias(matmul(dequantize(x, k, k), dequantize(w, k, width), k), bias)
      bound8 = error_bounds(x, quant_errors(x, k, k), w, quant_errors(w, k, width), k)
      assert {:ok, {out8, [^m, ^n]}} = L.linear_fp8(input, p, L.f32_binary(bias))
      assert_within(rows(L.to_floats(out8), n), own8, tight(own8))
      assert_within(rows(L.to_floats(out8), n), exact, bound8)

      # GELU (erf form); |gelu′| ≤ 1.13 carries the linear's bound over
      assert {:ok, {g, [^m, ^n]}} = L.linear_gelu_fp8(input, p, L.f32_binary(bias))
      g = rows(L.to_floats(g), n)
      assert_within(g, map2(own, &gelu/1), tight(map2(own, &gelu/1)))
      assert_within(g, map2(exact, &gelu/1), map2(bound, &(1.13 * &1)))

      # SwiGLU: the first n/2 rows are the gate, the rest the up projection
      i = div(n, 2)

      swiglu =
        for row <- own,
            {gate, up} = Enum.split(row, i),
            do: Enum.zip_with(gate, up, &(silu(&1) * &2))

      assert {:ok, {s, [^m, ^i]}} = L.linear_swiglu_fp8(input, p, L.f32_binary(bias))
      assert_within(rows(L.to_floats(s), i), swiglu, tight(swiglu))
    end
  end

  test "f16 and bf16 activations give the f32 activations' result" do
    {n, k} = {6, 48}
    {:ok, p} = L.prepack_fp8_weight_blocked(L.f32_binary(random(n * k, 4, 1.0)), [n, k], 16)
    # values with ≤ 8 significant bits are exact in bf16 and in f16
    x = for v <- random(2 * k, 5, 2.0), do: bf16_value(Float.round(v * 64) / 64)
    assert x == Enum.map(x, &bf16_value/1)
    assert {:ok, {want, [2, ^n]}} = L.linear_fp8_w8a16({L.f32_binary(x), [2, k], :f32}, p, nil)
    assert {:ok, {^want, [2, ^n]}} = L.linear_fp8_w8a16({L.f32_binary(x), [2, k]}, p, nil)

    for {bin, dtype} <- [{bf16_binary(x), :bf16}, {f16_binary(x), :f16}] do
      assert {:ok, {got, [2, ^n]}} = L.linear_fp8_w8a16({bin, [2, k], dtype}, p, nil)

      for {a, b} <- Enum.zip(L.to_floats(got), L.to_floats(want)),
          do: assert(abs(a - b) <= 1.0e-6 * (1 + abs(b)), "#{dtype}: #{a} vs #{b}")

      assert {:ok, {_, [2, 3]}} = L.linear_swiglu_fp8({bin, [2, k], dtype}, p, nil)
    end
  end

  # ---- embedding tables ----

  test "embedding_row gives each row back, for f32, bf16 and f16 tables" do
    {rows, cols} = {5, 8}
    values = random(rows * cols, 6, 3.0)

    for {bin, dtype, exact} <- [
          {L.f32_binary(values), :f32, as_f32(values)},
          {bf16_binary(values), :bf16, Enum.map(values, &bf16_value/1)},
          # f16 keeps 11 significant bits: round through it
          {f16_binary(values), :f16, for(<<h::float-16-little <- f16_binary(values)>>, do: h)}
        ] do
      assert {:ok, table} = L.embedding_table_new(bin, rows, cols, dtype)

      for {want, id} <- Enum.with_index(rows(exact, cols)) do
        assert {:ok, row} = L.embedding_row(table, id)
        assert L.to_floats(row) == want, "#{dtype} row #{id}"
      end

      assert {:error, {:token_out_of_range, ^rows, ^rows}} = L.embedding_row(table, rows)
    end

    assert {:ok, t} = L.embedding_table_new(L.f32_binary([1, 2, 3, 4, 5, 6]), 3, 2, :f32)
    assert {:ok, row} = L.embedding_row(t, 1)
    assert L.to_floats(row) == [3.0, 4.0]
  end

  test "f32_binary and to_floats round-trip, the specials included" do
    xs = [0.0, -1.5, 3.0e38, 1.0e-45, :nan, :infinity, :neg_infinity]

    assert L.to_floats(L.f32_binary(xs)) == [
             0.0,
             -1.5,
             3.0000000054977558e38,
             1.401298464324817e-45,
             :nan,
             :infinity,
             :neg_infinity
           ]

    assert L.f32_binary([1, 2.0]) == <<0, 0, 128, 63, 0, 0, 0, 64>>
  end

  # ---- the decode step ----

  # Greedy ids by decode_step alone: feed the prompt as one list (one batched pass, as generate
  # prefills it), then each predicted id.
  defp decode_loop(model, cache, prompt, n, step) do
    {:ok, first} = step.(model, prompt, cache, 0)
    pos = length(prompt)

    {rest, _} =
      Enum.map_reduce(2..n//1, {first, pos}, fn _, {last, pos} ->
        {:ok, next} = step.(model, last, cache, pos)
        {next, {next, pos + 1}}
      end)

    [first | rest]
  end

  defp greedy(m, t, c, p), do: L.decode_step(m, t, c, p)

  defp top1(m, t, c, p) do
    with {:ok, [{id, logit}]} when is_float(logit) <- L.decode_step_topk(m, t, c, p, 1),
         do: {:ok, id}
  end

  test "a decode_step loop reproduces Viva.generate's greedy tokens on tiny_gqa" do
    exp = expected("tiny_gqa")
    {:ok, tok} = Viva.Tokenizer.load(Path.join(fixture("tiny_gqa"), "tokenizer.json"))
    assert {:ok, ids} = Viva.Tokenizer.encode(tok, exp["prompt"])
    assert ids == exp["input_ids"]

    for weights <- [:native, :fp8] do
      model = Viva.load_model!(fixture("tiny_gqa"), weights: weights)

      %{tokens: want} =
        Viva.generate!(model, exp["prompt"], max_new_tokens: 20, stop_on_eos: false)

      if weights == :native, do: assert(want == exp["greedy_tokens"])

      {:ok, cache} = L.kv_cache_new(model)
      assert decode_loop(model, cache, ids, 20, &greedy/4) == want, "#{weights}"

      # top_k = 1 is greedy; a fresh cache of 64 positions
      {:ok, cache64} = L.kv_cache_new(model, 64)
      assert decode_loop(model, cache64, ids, 20, &top1/4) == want

      # rewinding: position 0 again, on the cache that already holds 35 positions
      [first_after_bos | _] = decode_loop(model, cache, [1], 1, &greedy/4)
      assert {:ok, [{^first_after_bos, _} | _] = top} = L.decode_step_topk(model, 1, cache, 0, 8)
      logits = for {_, l} <- top, do: l
      assert length(top) == 8 and logits == Enum.sort(logits, :desc)
    end
  end

  test "processes sharing a model, each with its own cache, get the same tokens" do
    exp = expected("tiny_gqa")
    model = Viva.load_model!(fixture("tiny_gqa"), weights: :native)

    results =
      1..4
      |> Task.async_stream(
        fn _ ->
          {:ok, cache} = L.kv_cache_new(model, 40)
          decode_loop(model, cache, exp["input_ids"], 20, &greedy/4)
        end,
        timeout: 120_000
      )
      |> Enum.map(fn {:ok, tokens} -> tokens end)

    assert results == List.duplicate(exp["greedy_tokens"], 4)
  end

  # ---- bad arguments: {:error, reason}, never an exception or a crash ----

  test "wrong shapes, sizes and values are {:error, reason}" do
    w = L.f32_binary(random(4 * 32, 8, 1.0))
    x = L.f32_binary(List.duplicate(1.0, 32))
    {:ok, p} = L.prepack_fp8_weight(w, [4, 32])

    assert {:error, {:shape_mismatch, _, _, _}} = L.prepack_fp8_weight(w, [4, 31])
    assert {:error, {:shape_mismatch, _, _, _}} = L.prepack_fp8_weight(w, [128])
    assert {:error, {:shape_mismatch, _, _, _}} = L.prepack_fp8_weight(w, [2, 2, 32])
    assert {:error, {:invalid_option, :shape, _}} = L.prepack_fp8_weight(w, [4, 0])
    assert {:error, {:invalid_option, :shape, _}} = L.prepack_fp8_weight(w, "4x32")
    assert {:error, {:invalid_option, :weight, _}} = L.prepack_fp8_weight([1.0, 2.0], [1, 2])

    for b <- [0, 8, 48, 256, :x, 16.0],
        do:
          assert(
            {:error, {:invalid_option, :block, ^b}} = L.prepack_fp8_weight_blocked(w, [4, 32], b)
          )

    for f <- [:linear_fp8_w8a16, :linear_fp8, :linear_gelu_fp8, :linear_swiglu_fp8] do
      # K differs from the weight's, bytes differ from the shape, bias of the wrong length
      assert {:error, {:shape_mismatch, _, [1, 32], [1, 16]}} =
               apply(L, f, [{x, [1, 16]}, p, nil])

      assert {:error, {:shape_mismatch, _, _, _}} = apply(L, f, [{x, [2, 32]}, p, nil])

      assert {:error, {:shape_mismatch, _, _, _}} =
               apply(L, f, [{<<x::binary, 0>>, [1, 32]}, p, nil])

      assert {:error, {:shape_mismatch, _, _, _}} = apply(L, f, [{x, [1, 32], :bf16}, p, nil])
      assert {:error, {:shape_mismatch, _, _, _}} = apply(L, f, [{x, [32]}, p, nil])

      assert {:error, {:shape_mismatch, _, _, _}} =
               apply(L, f, [{x, [1, 32]}, p, L.f32_binary([1.0])])

      assert {:error, {:invalid_option, :bias, _}} =
               apply(L, f, [{x, [1, 32]}, p, [1.0, 2.0, 3.0, 4.0]])

      assert {:error, {:invalid_option, :input, _}} = apply(L, f, [x, p, nil])
      assert {:error, {:invalid_option, :input, _}} = apply(L, f, [{x}, p, nil])
      assert {:error, {:invalid_option, :dtype, :f64}} = apply(L, f, [{x, [1, 32], :f64}, p, nil])
      assert {:ok, _} = apply(L, f, [{x, [1, 32]}, p, nil])
    end

    # SwiGLU needs an even number of rows (gate, then up)
    {:ok, odd} = L.prepack_fp8_weight(L.f32_binary(random(3 * 32, 9, 1.0)), [3, 32])
    assert {:error, {:shape_mismatch, _, [4], [3]}} = L.linear_swiglu_fp8({x, [1, 32]}, odd, nil)

    t = L.f32_binary(List.duplicate(0.5, 6))
    assert {:error, {:shape_mismatch, _, _, _}} = L.embedding_table_new(t, 4, 2, :f32)
    assert {:error, {:shape_mismatch, _, _, _}} = L.embedding_table_new(t, 3, 2, :bf16)
    assert {:error, {:invalid_option, :dtype, :int8}} = L.embedding_table_new(t, 3, 2, :int8)
    assert {:error, {:invalid_option, :rows, -1}} = L.embedding_table_new(t, -1, 2, :f32)
    assert {:error, {:invalid_option, :cols, 2.0}} = L.embedding_table_new(t, 3, 2.0, :f32)

    assert {:error, {:invalid_option, :table, _}} =
             L.embedding_table_new(:not_a_binary, 3, 2, :f32)

    {:ok, table} = L.embedding_table_new(t, 3, 2, :f32)
    assert {:error, {:invalid_option, :id, -1}} = L.embedding_row(table, -1)
    assert {:error, {:invalid_option, :id, "0"}} = L.embedding_row(table, "0")

    model = Viva.load_model!(fixture("tiny_gqa"), weights: :native)
    other = Viva.load_model!(fixture("tiny_mha_sharded"), weights: :native)
    {:ok, cache} = L.kv_cache_new(model, 2)

    for s <- [0, 129, -1, :foo, 2.5],
        do: assert({:error, {:invalid_option, :max_seq, ^s}} = L.kv_cache_new(model, s))

    assert {:error, {:invalid_option, :pos, _}} = L.decode_step(model, 1, cache, 1)
    assert {:ok, _} = L.decode_step(model, 1, cache, 0)
    assert {:ok, _} = L.decode_step(model, 5, cache, 1)
    assert {:error, {:context_overflow, 3, 2}} = L.decode_step(model, 5, cache, 2)
    assert {:error, {:token_out_of_range, 512, 512}} = L.decode_step(model, 512, cache, 0)
    assert {:error, {:invalid_option, :token, -1}} = L.decode_step(model, -1, cache, 0)
    assert {:error, {:invalid_option, :pos, -1}} = L.decode_step(model, 1, cache, -1)
    assert {:error, {:invalid_option, :kv_cache, _}} = L.decode_step(other, 1, cache, 0)

    for k <- [0, 257, -1, :x],
        do:
          assert({:error, {:invalid_option, :k, ^k}} = L.decode_step_topk(model, 1, cache, 0, k))

    assert {:ok, top} = L.decode_step_topk(model, 1, cache, 0, 256)
    assert length(top) == 256
  end

  test "a resource of the wrong type (or no resource) is {:error, {:invalid_option, arg, _}}" do
    model = Viva.load_model!(fixture("tiny_gqa"), weights: :native)
    {:ok, cache} = L.kv_cache_new(model, 8)
    {:ok, packed} = L.prepack_fp8_weight(L.f32_binary(List.duplicate(0.25, 64)), [2, 32])
    {:ok, table} = L.embedding_table_new(L.f32_binary([1, 2]), 1, 2, :f32)
    x = {L.f32_binary(List.duplicate(1.0, 32)), [1, 32]}
    {:ok, tok} = Viva.Tokenizer.load(Path.join(fixture("tiny_gqa"), "tokenizer.json"))
    strangers = [make_ref(), self(), nil, 42, "bin", {model}, tok]

    for bad <- [model, cache, table | strangers] do
      assert {:error, {:invalid_option, :packed, ^bad}} = L.packed_info(bad)

      for f <- [:linear_fp8_w8a16, :linear_fp8, :linear_gelu_fp8, :linear_swiglu_fp8],
          do: assert({:error, {:invalid_option, :packed, ^bad}} = apply(L, f, [x, bad, nil]))
    end

    for bad <- [model, cache, packed | strangers],
        do: assert({:error, {:invalid_option, :table, ^bad}} = L.embedding_row(bad, 0))

    for bad <- [cache, packed, table | strangers] do
      assert {:error, {:invalid_option, :model, ^bad}} = L.kv_cache_new(bad)
      assert {:error, {:invalid_option, :model, ^bad}} = L.kv_cache_new(bad, 4)
      assert {:error, {:invalid_option, :model, ^bad}} = L.decode_step(bad, 1, cache, 0)
      assert {:error, {:invalid_option, :model, ^bad}} = L.decode_step_topk(bad, 1, cache, 0, 3)
    end

    for bad <- [model, packed, table | strangers] do
      assert {:error, {:invalid_option, :kv_cache, ^bad}} = L.decode_step(model, 1, bad, 0)

      assert {:error, {:invalid_option, :kv_cache, ^bad}} =
               L.decode_step_topk(model, 1, bad, 0, 3)
    end

    # everything still works afterwards
    assert {:ok, %{n: 2, k: 32}} = L.packed_info(packed)
    assert {:ok, {_, [1, 2]}} = L.linear_fp8(x, packed, nil)
    assert {:ok, _} = L.embedding_row(table, 0)
    exp = expected("tiny_gqa")
    assert {:ok, _} = L.decode_step(model, 1, cache, 0)
    {:ok, cache2} = L.kv_cache_new(model, 32)

    assert decode_loop(model, cache2, exp["input_ids"], 3, &greedy/4) ==
             Enum.take(exp["greedy_tokens"], 3)
  end

  # ---- the helper modules (Viva.Safetensors, Viva.Tokenizer) ----

  test "safetensors helpers and the tokenizer" do
    assert {:ok, %{"model.norm.weight" => %{dtype: "BF16", shape: [256]}}} =
             Viva.Safetensors.open_header(fixture("tiny_gqa"))

    assert {:ok, {[256], bf16}} =
             Viva.Safetensors.read_tensor_bf16(fixture("tiny_gqa"), "model.norm.weight")

    assert {:ok, f32} = Viva.Safetensors.bf16_to_fp32_binary(bf16)
    assert byte_size(f32) == 1024
    assert {:ok, t} = Viva.Safetensors.transpose_fp32(L.f32_binary([1, 2, 3, 4, 5, 6]), 2, 3)
    assert L.to_floats(t) == [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]

    exp = expected("tiny_gqa")
    {:ok, tok} = Viva.Tokenizer.load(Path.join(fixture("tiny_gqa"), "tokenizer.json"))
    assert Viva.Tokenizer.encode(tok, exp["prompt"]) == {:ok, exp["input_ids"]}
    assert Viva.Tokenizer.decode(tok, exp["greedy_tokens"]) == {:ok, exp["greedy_text"]}
    assert {:error, :invalid_utf8} = Viva.Tokenizer.encode(tok, <<255, 254>>)
  end
end
