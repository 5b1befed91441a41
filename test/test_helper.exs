# The Erlang test-support modules (JSON reader, fixtures, broken checkpoints) are shared
# with the EUnit suite; they live in test/, outside the app, so compile them here.
for mod <- ["viva_tensor_test_json", "viva_tensor_test_support"] do
  src = Path.join(__DIR__, mod <> ".erl") |> String.to_charlist()
  {:ok, module, beam} = :compile.file(src, [:binary, :return_errors])
  {:module, ^module} = :code.load_binary(module, src, beam)
end

ExUnit.start(timeout: 600_000)
