rustler::init!("viva_tensor_nif");
