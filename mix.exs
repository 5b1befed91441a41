defmodule Mix.Tasks.Compile.VivaNif do
  @moduledoc """
  Builds the Rust NIF (`cargo build --release -p viva_tensor_nif`) and copies
  `target/release/libviva_tensor_nif.so` to `priv/`, where `viva_tensor_nif.erl` loads it.
  cargo decides what is stale, so a no-change run costs well under a second.
  """
  use Mix.Task.Compiler

  @lib "libviva_tensor_nif.so"

  @impl true
  def run(_args) do
    root = File.cwd!()
    cargo = System.find_executable("cargo") || Mix.raise("cargo not on PATH: install Rust (see README.md)")

    {_, status} =
      System.cmd(cargo, ["build", "--release", "-p", "viva_tensor_nif"],
        cd: root,
        into: IO.stream(:stdio, :line),
        stderr_to_stdout: true
      )

    if status != 0, do: Mix.raise("cargo build --release -p viva_tensor_nif failed (exit #{status})")

    built = Path.join([target_dir(root), "release", @lib])
    dest = Path.join([root, "priv", @lib])
    File.mkdir_p!(Path.dirname(dest))

    # Copy only when changed, so the .so a running VM mapped is not rewritten needlessly.
    if not File.exists?(dest) or File.read!(built) != File.read!(dest) do
      File.cp!(built, dest)
    end

    # priv/ may not have existed when Mix built the _build structure: link it now so
    # code:priv_dir(viva_tensor) finds the library.
    Mix.Project.build_structure()
    {:ok, []}
  end

  defp target_dir(root), do: System.get_env("CARGO_TARGET_DIR") || Path.join(root, "target")
end

defmodule Viva.MixProject do
  use Mix.Project

  def project do
    [
      app: :viva_tensor,
      version: "0.1.0",
      elixir: "~> 1.14",
      erlc_paths: ["src"],
      elixirc_paths: ["lib"],
      compilers: [:viva_nif] ++ Mix.compilers(),
      start_permanent: false,
      deps: [],
      docs: [main: "Viva"]
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end
end
