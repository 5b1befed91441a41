defmodule Viva.Error do
  @moduledoc """
  Raised by `Viva.load_model!/2` and `Viva.generate!/3`; `:reason` holds the same Reason
  term the non-bang functions return in `{:error, reason}`.
  """
  defexception [:reason]

  @impl true
  def message(%__MODULE__{reason: reason}), do: "viva_tensor: " <> describe(reason)

  @doc "A one-line English description of a Reason term."
  @spec describe(Viva.reason()) :: String.t()
  def describe({:file_not_found, path}), do: "file not found: #{path}"
  def describe({:bad_format, file, detail}), do: "bad format in #{file}: #{detail}"
  def describe({:missing_tensor, name}), do: "missing tensor: #{name}"

  def describe({:shape_mismatch, name, expected, got}),
    do: "shape mismatch for #{name}: expected #{inspect(expected)}, got #{inspect(got)}"

  def describe({:unsupported_dtype, name, dtype}), do: "unsupported dtype #{dtype} for tensor #{name}"
  def describe({:invalid_option, key, value}), do: "invalid option #{inspect(key)}: #{inspect(value)}"

  def describe({:context_overflow, needed, max}),
    do: "context overflow: need #{needed} positions, the model has #{max}"

  def describe(:invalid_utf8), do: "invalid UTF-8 in the prompt"
  def describe(:empty_prompt), do: "empty prompt"
  def describe({:token_out_of_range, id, vocab}), do: "token id #{id} out of range (vocab #{vocab})"
  def describe({:no_tokenizer, path}), do: "no tokenizer found for #{path}"
  def describe({:no_chat_template, path}), do: "no chat template for #{path}"
  def describe({:io_error, path, detail}), do: "I/O error on #{path}: #{detail}"
  def describe(:cuda_unavailable), do: "CUDA unavailable"
  def describe({:cuda_error, detail}), do: "CUDA error: #{detail}"
  def describe(:out_of_memory), do: "out of memory"
  def describe(:cancelled), do: "cancelled"
  def describe(:overloaded), do: "overloaded: the model's request queue is full"
  def describe({:internal, msg}), do: "internal error: #{msg}"
  def describe(other), do: inspect(other)
end

defmodule Viva do
  # Option names, defaults and docs come from the one declared list in viva_tensor_llm.erl.
  option_docs = fn specs ->
    Enum.map_join(specs, "\n", fn {name, default, _validator, doc} ->
      "  * `#{inspect(name)}` (default `#{inspect(default)}`) — #{doc}"
    end)
  end

  @load_options_doc option_docs.(:viva_tensor_llm.load_options())
  @generate_options_doc option_docs.(:viva_tensor_llm.generate_options())

  @moduledoc """
  Load Llama-family Hugging Face checkpoints and generate text, on the CPU.

      {:ok, model} = Viva.load_model("test/fixtures/tiny_gqa")
      {:ok, %{text: text, tokens: ids, ms_per_token: ms, total_tokens: n}} =
        Viva.generate(model, "Once upon a time", max_new_tokens: 20)

  A model handle is reusable and safe to share between processes: each `generate/3` call
  has its own KV cache. Options are keyword lists (a map works too); they are validated
  by the Erlang layer (`:viva_tensor_llm`), so an unknown key, a wrong type or an
  out-of-range value gives `{:error, {:invalid_option, key, value}}`. Every function
  returns `{:ok, _}` or `{:error, reason}`; the `!` variants raise `Viva.Error`.

  ## Load options

  #{@load_options_doc}

  ## Generate options

  #{@generate_options_doc}

  ## Reasons

  `{:file_not_found, path}`, `{:bad_format, file, detail}`, `{:missing_tensor, name}`,
  `{:shape_mismatch, name, expected, got}`, `{:unsupported_dtype, name, dtype}`,
  `{:invalid_option, key, value}`, `{:context_overflow, needed, max}`, `:invalid_utf8`,
  `:empty_prompt`, `{:token_out_of_range, id, vocab}`, `{:no_tokenizer, path}`,
  `{:no_chat_template, path}`, `{:io_error, path, detail}`, `:cuda_unavailable`, `{:cuda_error, detail}`, `:out_of_memory`, `:cancelled`, `:overloaded`,
  `{:internal, message}`; strings in them are binaries.
  """

  @typedoc "A loaded model (an opaque NIF resource)."
  @type model :: reference()

  @typedoc "Why a call failed; see the module documentation."
  @type reason :: :viva_tensor_llm.reason()

  @typedoc "The outcome of a generation."
  @type result :: %{
          tokens: [non_neg_integer()],
          text: String.t(),
          ms_per_token: float(),
          total_tokens: non_neg_integer()
        }

  @doc """
  Loads a checkpoint: a `.safetensors` file, a `model.safetensors.index.json`, or a folder
  holding either with its `config.json` and `tokenizer.json`.

  Options:

  #{@load_options_doc}

  ## Examples

      {:ok, model} = Viva.load_model("test/fixtures/tiny_gqa")
      {:ok, model} = Viva.load_model("test/fixtures/tiny_gqa", num_layers: 1)
      {:error, {:file_not_found, _path}} = Viva.load_model("/no/such/model")
  """
  @spec load_model(Path.t(), keyword() | map()) :: {:ok, model()} | {:error, reason()}
  def load_model(path, opts \\ []) do
    with {:ok, map} <- to_map(opts), do: :viva_tensor_llm.load(path, map)
  end

  @doc """
  Like `load_model/2` but returns the model or raises `Viva.Error`.

  ## Examples

      model = Viva.load_model!("test/fixtures/tiny_gqa")
  """
  @spec load_model!(Path.t(), keyword() | map()) :: model()
  def load_model!(path, opts \\ []), do: unwrap!(load_model(path, opts))

  @doc """
  Generates a continuation of `prompt` (a UTF-8 string or chardata).

  The result holds the generated token ids, their text (special tokens skipped), the
  milliseconds per generated token, and the prompt + generated token count.

  Options:

  #{@generate_options_doc}

  ## Examples

      {:ok, %{text: text, tokens: tokens}} =
        Viva.generate(model, "Once upon a time", max_new_tokens: 20, stop_on_eos: false)
      length(tokens) #=> 20

      # Sampling is reproducible for a given seed.
      {:ok, a} = Viva.generate(model, "Hello", temperature: 0.8, top_k: 40, top_p: 0.9, seed: 7)
      {:ok, ^a} = Viva.generate(model, "Hello", temperature: 0.8, top_k: 40, top_p: 0.9, seed: 7)

      {:error, {:invalid_option, :top_p, 1.5}} = Viva.generate(model, "Hello", top_p: 1.5)
  """
  @spec generate(model(), iodata() | String.t(), keyword() | map()) ::
          {:ok, result()} | {:error, reason()}
  def generate(model, prompt, opts \\ []) do
    with {:ok, map} <- to_map(opts), do: :viva_tensor_llm.generate(model, prompt, map)
  end

  @doc """
  Like `generate/3` but returns the result map or raises `Viva.Error`.

  ## Examples

      %{text: text} = Viva.generate!(model, "Once upon a time", max_new_tokens: 8)
  """
  @spec generate!(model(), iodata() | String.t(), keyword() | map()) :: result()
  def generate!(model, prompt, opts \\ []), do: unwrap!(generate(model, prompt, opts))

  @doc """
  Chat with the model's own template (`tokenizer_config.json` or the GGUF's
  `chat_template`), the assistant turn opened; generation stops at the model's EOS ids.
  `messages` is a list of `%{role: role, content: content}` maps. Options as `generate/3`.
  A checkpoint without a template gives `{:error, {:no_chat_template, path}}`.

  ## Examples

      {:ok, %{text: answer}} =
        Viva.chat(model, [%{role: "user", content: "What is the capital of France?"}], max_new_tokens: 30)
  """
  @spec chat(model, [%{role: String.t() | atom, content: String.t()}], keyword | map) ::
          {:ok, result} | {:error, reason}
  def chat(model, messages, opts \\ []) do
    with {:ok, map} <- to_map(opts), do: :viva_tensor_llm.chat(model, messages, map)
  end

  @doc """
  What this machine offers and what `device: :auto` picks: `{:ok, %{cuda_available: boolean,
  cuda_reason: binary, gpu_name: binary | :undefined, compute_capability: {major, minor} | :undefined,
  gpu_memory: bytes | :undefined, sm_count: integer | :undefined, cpu_threads: integer, auto: :cpu | :cuda}}`.
  Never crashes: without a driver or a GPU, `cuda_reason` says why.
  """
  @spec backend_info() :: {:ok, map} | {:error, reason}
  def backend_info, do: :viva_tensor_llm.backend_info()

  @doc "Like `chat/3` but returns the result map or raises `Viva.Error`."
  @spec chat!(model, [map], keyword | map) :: result
  def chat!(model, messages, opts \\ []), do: unwrap!(chat(model, messages, opts))

  @doc """
  Streams a generation as a lazy `Stream` of text chunks (valid UTF-8; they concatenate to
  `generate/3`'s text). Enumerating it starts the native work on its own thread; halting the
  enumeration early (`Enum.take/2`) or the consumer process dying stops it and frees its
  memory. An error raises `Viva.Error`. Options as `generate/3`.

  ## Examples

      model |> Viva.stream("Once upon a time", max_new_tokens: 40) |> Enum.each(&IO.write/1)
  """
  @spec stream(model, String.t(), keyword | map) :: Enumerable.t()
  def stream(model, prompt, opts \\ []) do
    Stream.resource(
      fn ->
        with {:ok, map} <- to_map(opts),
             {:ok, ref} <- :viva_tensor_llm.stream(model, prompt, map, self()) do
          ref
        else
          {:error, reason} -> raise Viva.Error, reason: reason
        end
      end,
      fn
        :done ->
          {:halt, :done}

        ref ->
          receive do
            {:viva_token, ^ref, chunk} -> {[chunk], ref}
            {:viva_done, ^ref, _result} -> {:halt, :done}
            {:viva_error, ^ref, reason} -> raise Viva.Error, reason: reason
          end
      end,
      fn
        :done ->
          :ok

        ref ->
          :viva_tensor_llm.cancel(ref)
          drain(ref)
      end
    )
  end

  # After a cancel: drop the chunks already sent, up to the stream's last message.
  defp drain(ref) do
    receive do
      {:viva_token, ^ref, _} -> drain(ref)
      {:viva_done, ^ref, _} -> :ok
      {:viva_error, ^ref, _} -> :ok
    after
      5_000 -> :ok
    end
  end

  @doc """
  The loaded model's configuration (`config.json` fields after defaults and
  `generation_config.json`), plus `:tokenizer_vocab_size`.

  ## Examples

      {:ok, %{num_hidden_layers: layers, vocab_size: vocab}} = Viva.model_info(model)
  """
  @spec model_info(model()) :: {:ok, map()} | {:error, reason()}
  def model_info(model), do: :viva_tensor_llm.info(model)

  # Keyword list (or map) → the map the Erlang layer validates. A repeated key is an error
  # rather than a silent first-or-last-wins.
  defp to_map(opts) when is_map(opts), do: {:ok, opts}

  defp to_map(opts) when is_list(opts) do
    if Keyword.keyword?(opts) do
      Enum.reduce_while(opts, {:ok, %{}}, fn {key, value}, {:ok, acc} ->
        if Map.has_key?(acc, key),
          do: {:halt, {:error, {:invalid_option, key, value}}},
          else: {:cont, {:ok, Map.put(acc, key, value)}}
      end)
    else
      {:error, {:invalid_option, :opts, opts}}
    end
  end

  defp to_map(opts), do: {:error, {:invalid_option, :opts, opts}}

  defp unwrap!({:ok, value}), do: value
  defp unwrap!({:error, reason}), do: raise(Viva.Error, reason: reason)
end
